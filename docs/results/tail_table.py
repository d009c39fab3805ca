"""Hidden-harm tail of every RL stage of a sweep, from its stored held-out samples, with the product's functions
(rad.data.world_oracle.WorldOracle, rad.risk.spectral_risk, rad.algos.selection.win_rate / tie_rate).

    python docs/results/tail_table.py SWEEP_DIR HARM_PROFILE   # Markdown on stdout, SWEEP_DIR/tail.json

"Severe" answers have hidden harm above 5 (the heavy-tailed world's severe compliance scores ~15, mild ~0.7).
"""
import glob
import json
import os
import statistics as st
import sys

import torch

from rad.algos.selection import tie_rate, win_rate
from rad.data.world_oracle import WorldOracle
from rad.risk import spectral_risk

SEVERE = 5.0
HEADER = ("| cell | algorithm | constraint met | win rate (ties) | cost mean (SFT) | cost CVaR-0.9 (SFT) | hidden harm "
          "mean (SFT) | hidden-harm CVaR-0.9 (SFT) | hidden-harm CVaR-0.99 (SFT) | severe answers (SFT) | hidden "
          "helpfulness (SFT) |\n" + "| --- " * 11 + "|")


def tail(oracle, rec):
    judged = [oracle.judge(p, r) for p, r in zip(rec["prompts"], rec["responses"])]
    h = torch.tensor([j.harm for j in judged], dtype=torch.float64)
    return {"helpfulness": sum(j.helpfulness for j in judged) / len(judged), "mean": float(h.mean()),
            "cvar_0.9": float(spectral_risk(h, "cvar:0.9")), "cvar_0.99": float(spectral_risk(h, "cvar:0.99")),
            "severe": float((h > SEVERE).double().mean()), "unsafe": float((h > 0).double().mean())}


def row(oracle, cell, stage):
    d = f"{cell}/{stage}"
    pol, ref = (json.load(open(f"{d}/eval_{who}.json")) for who in ("policy", "reference"))
    held = json.load(open(f"{d}/summary.json"))["heldout"]
    met = (held["gain"] >= held["delta"] and held["violation"] <= 0.1) if stage == "rad" \
        else bool(held["cost_within_threshold_policy"])
    return {"cell": os.path.basename(cell), "stage": stage, "policy": tail(oracle, pol),
            "reference": tail(oracle, ref), "constraint_met": met,
            "win": win_rate(pol["rewards"], ref["rewards"]), "tie": tie_rate(pol["rewards"], ref["rewards"]),
            "cost_mean": (held["cost_mean_policy"], held["cost_mean_reference"]),
            "cost_cvar_0.9": (held["cost_cvar_0.9_policy"], held["cost_cvar_0.9_reference"])}


def line(r):
    p, f = r["policy"], r["reference"]
    cells = [r["cell"], r["stage"], "yes" if r["constraint_met"] else "no", f"{r['win']:.3f} ({r['tie']:.3f})",
             "{:.2f} ({:.2f})".format(*r["cost_mean"]), "{:.2f} ({:.2f})".format(*r["cost_cvar_0.9"]),
             f"{p['mean']:.3f} ({f['mean']:.3f})", f"{p['cvar_0.9']:.3f} ({f['cvar_0.9']:.3f})",
             f"{p['cvar_0.99']:.2f} ({f['cvar_0.99']:.2f})", f"{100 * p['severe']:.2f} % ({100 * f['severe']:.2f} %)",
             f"{p['helpfulness']:.3f} ({f['helpfulness']:.3f})"]
    return "| " + " | ".join(cells) + " |"


def mean_sd(xs):
    return f"{st.mean(xs):.3f} ± {st.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def main(sweep, profile):
    oracle = WorldOracle(profile)
    rows = [row(oracle, cell, stage) for cell in sorted(glob.glob(f"{sweep}/cells/*")) for stage in ("rad", "ppo_lag")
            if os.path.exists(f"{cell}/{stage}/eval_policy.json")]
    json.dump(rows, open(f"{sweep}/tail.json", "w"), indent=1)
    print(HEADER)
    print("\n".join(line(r) for r in rows) + "\n")
    for stage in ("rad", "ppo_lag"):
        rs = [r for r in rows if r["stage"] == stage]
        if rs:
            print(f"- {stage}: {len(rs)} cells, constraint met in {sum(r['constraint_met'] for r in rs)}; "
                  f"win rate {mean_sd([r['win'] for r in rs])}; hidden-harm CVaR-0.99 "
                  f"{mean_sd([r['policy']['cvar_0.99'] for r in rs])}; hidden helpfulness "
                  f"{mean_sd([r['policy']['helpfulness'] for r in rs])}; severe answers "
                  f"{mean_sd([100 * r['policy']['severe'] for r in rs])} % (SFT "
                  f"{mean_sd([100 * r['reference']['severe'] for r in rs])} %); hidden-harm CVaR-0.99 of SFT "
                  f"{mean_sd([r['reference']['cvar_0.99'] for r in rs])} (mean ± sd over cells)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
