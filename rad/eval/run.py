"""``rad eval``: generate (cached), score, compare every (red, blue) competition, write the report.

Output directory layout::

    report.md, report.html        every table and figure
    results.json                  every number (and the resolved config, model fingerprints, cache use)
    config.yaml                   the resolved config
    tables/*.csv                  one CSV per table (unrounded)
    pairs/<red>_vs_<blue>.csv     the per-prompt held-out table each pairwise number is computed from
    responses/<model>_<set>_seed<s>.csv   every response with its scores (and hidden truth on the world)
    ood/<judge>/<red>_vs_<blue>_seed<s>.csv   every OOD verdict with the judge's raw answer
    ood/<judge>/<model>_seed<s>.csv           a per-response judge's rating of every red-team response
                                              (score, verdict, raw answer, the score's parts)
    figures/*.png                 win-rate heatmap, cost CDFs, quantile-gap panels

On the embedded world (prompt specs ``embedded/...``) the hidden ground truth of
:class:`rad.data.world_oracle.WorldOracle` (seed independent; ``world.harm_profile``'s) is reported next
to the cost model: per-model risk of the true harm, dominance on the true harm,
and a ground-truth OOD judge.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rad.config import save_config, to_dict
from rad.errors import ConfigError, DataError
from rad.eval import arena, judges, plots
from rad.eval.config import EvalConfig, resolve_model_dir
from rad.eval.judges.classifier import CONVENTIONS
from rad.eval.report import Report, mean_std, num, pct, write_csv
from rad.eval.responses import OutputCache, Outputs, build_outputs, generate_record, score_record
from rad.eval.sweep_report import read_sweep, sweep_section
from rad.data.prompt_format import saved_prompt_format, warn_on_mismatch
from rad.data.sources import DataSpecs, spec_name
from rad.models.score_formats import stated_templates
from rad.runtime.provenance import digest, dir_fingerprint
from rad.settings import is_url

log = logging.getLogger("rad.eval")

HELDOUT, REDTEAM = "heldout", "redteam"
TRUTH_JUDGE = "ground-truth"


def _prompts(specs: DataSpecs, kind: str, cfg: EvalConfig) -> list[str]:
    from rad.algos.assets import load_records

    records = load_records(specs, kind, cfg.world, cfg.seed)
    # Unique prompts in file order: a repeated prompt would weigh twice in every table.
    prompts = list(dict.fromkeys(r["prompt"] for r in records))
    if not prompts:
        raise DataError(f"eval: no prompts in {specs}")
    return prompts


def _embedded(specs: DataSpecs) -> bool:
    return bool(specs) and all(spec_name(s).startswith("embedded/") for s in specs)


def prompt_formats(cfg: EvalConfig, model_dirs: dict[str, Path]) -> dict[str, str]:
    """The format each model generates with: its ``prompt_formats`` entry, else the one saved with it."""
    overrides = cfg.format_overrides()
    return {name: overrides.get(name) or saved_prompt_format(path) for name, path in model_dirs.items()}


def collect(cfg: EvalConfig, model_dirs: dict[str, Path], sets: list[tuple[str, int, list[str], int]],
            oracles: dict[str, Any], formats: dict[str, str]) -> tuple[dict[tuple[str, str, int], Outputs],
                                                                        dict[str, str]]:
    """Scored outputs of every model on every (set, seed), from the cache where possible; and fingerprints.

    ``formats``: the prompt format of each model (:func:`prompt_formats`)."""
    from rad.cache import cache_root

    cache = OutputCache(cfg.cache_dir or cache_root() / "eval")
    # a score model's files (a URL by its name) and how it is read (format, sign, template)
    reward_fp = f"{dir_fingerprint(cfg.reward_model)}:{digest(cfg.reward_scorer.identity())}"
    cost_fp = f"{dir_fingerprint(cfg.cost_model)}:{digest(cfg.cost_scorer.identity())}"
    skey = cache.score_key(reward_fp, cost_fp, cfg.scoring)
    scorer = None
    fps: dict[str, str] = {}
    out: dict[tuple[str, str, int], Outputs] = {}
    scorer_formats = stated_templates({"reward": (cfg.reward_model, cfg.reward_scorer),
                                       "cost": (cfg.cost_model, cfg.cost_scorer)})
    for name, path in model_dirs.items():
        fps[name] = dir_fingerprint(path)
        if formats[name] != saved_prompt_format(path):  # the directory's fingerprint covers only its saved format
            fps[name] += f"+prompt_format={formats[name]}"
        warn_on_mismatch(formats[name], scorer_formats, name)
        engine = None
        for set_name, seed, prompts, n in sets:
            sampling = dataclasses.replace(cfg.sampling, seed=seed)
            gkey = cache.generation_key(fps[name], prompts, n, sampling, cfg.engine)

            def generate() -> dict[str, list]:
                nonlocal engine
                if engine is None:
                    from rad.runtime.rollout.hf_engine import HFEngine

                    engine = HFEngine(path, dtype=cfg.engine.dtype, device=cfg.engine.device or None,
                                      micro_batch_size=cfg.engine.micro_batch_size,
                                      trust_remote_code=cfg.engine.trust_remote_code,
                                      prompt_format=formats[name])
                t = time.perf_counter()
                record = generate_record(engine, prompts, n, sampling)
                log.info("generated %d responses of %s on %s (seed %d) in %.1fs", len(prompts) * n, name,
                         set_name, seed, time.perf_counter() - t)
                return record

            def score(gen: dict[str, list]) -> dict[str, list]:
                nonlocal scorer
                if scorer is None:
                    from rad.runtime.scorer import Scorer

                    scorer = Scorer(cfg.reward_model, cfg.cost_model, batch_size=cfg.scoring.batch_size,
                                    max_length=cfg.scoring.max_length, device=cfg.scoring.device,
                                    reward_scorer=cfg.reward_scorer, cost_scorer=cfg.cost_scorer)
                return score_record(scorer, prompts, gen)

            gen, generated = cache.generations(gkey, generate)
            scores, scored = cache.scores(gkey, skey, lambda: score(gen))
            out[(name, set_name, seed)] = build_outputs(name, prompts, gen, scores, oracles.get(set_name),
                                                        generated=generated, scored=scored)
        if engine is not None:
            engine.close()
    return out, fps


# -- tables ------------------------------------------------------------------------------------------


def _measures(o: Outputs) -> dict[str, np.ndarray]:
    m = {"cost": o.costs, "reward": o.rewards}
    if o.harm is not None:
        m.update(true_harm=o.harm, true_helpfulness=o.helpfulness)
    return m


def _pooled(outputs: dict, name: str, set_name: str, seeds: list[int]) -> dict[str, np.ndarray]:
    per_seed = [_measures(outputs[(name, set_name, s)]) for s in seeds]
    return {k: np.concatenate([m[k] for m in per_seed]) for k in per_seed[0]}


def risk_rows(outputs: dict, names: list[str], set_name: str, seeds: list[int], cfg: EvalConfig) -> list[dict]:
    """Per model and measure: spectral risks (harm-like measures), mean/std/quantiles, safe share."""
    rows = []
    for name in names:
        pooled = _pooled(outputs, name, set_name, seeds)
        empty = sum(outputs[(name, set_name, s)].empty for s in seeds)
        for measure, values in pooled.items():
            if measure in ("cost", "true_harm"):
                stats = arena.risk_profile(values, cfg.weightings, cfg.quantiles)
            else:
                stats = {"n": len(values), **arena.summary_profile(values, cfg.quantiles)}
            rows.append({"set": set_name, "measure": measure, "model": name, "empty_responses": empty, **stats})
    return rows


def _rate(judge, outputs: dict, names: list[str], seeds: list[int], jname: str, out: Path) -> dict:
    """Every model's red-team responses rated once per seed by a per-response judge; each rating saved to
    ``ood/<judge>/<model>_seed<s>.csv``. Returns ``{(model, seed): ratings}``."""
    ratings = {}
    for name in names:
        for seed in seeds:
            o = outputs[(name, REDTEAM, seed)]
            t = time.perf_counter()
            rated = judge.rate(o.prompts, o.responses)
            log.info("judge %s rated %d responses of %s (seed %d) in %.1fs", jname, len(rated), name, seed,
                     time.perf_counter() - t)
            ratings[(name, seed)] = rated
            details = sorted({k for r in rated for k in r.detail})
            write_csv(pd.DataFrame({
                "prompt": o.prompts, "response": o.responses, "score": [r.score for r in rated],
                "verdict": [r.verdict for r in rated], "judge_answer": [r.raw for r in rated],
                "attempts": [r.attempts for r in rated],
                **{k: [r.detail.get(k) for r in rated] for k in details}, "cost": o.costs}),
                out / "ood" / jname / f"{name}_seed{seed}.csv")
    return ratings


def rating_rows(ratings: dict, names: list[str], seeds: list[int], jname: str) -> tuple[list[dict], list[dict]]:
    """Per (model, seed) and per model over seeds: unsafe share, mean score and failures of a per-response
    judge (:func:`judges.rating_tally`)."""
    per_seed = [{"judge": jname, "model": name, "seed": seed, **judges.rating_tally(ratings[(name, seed)])}
                for name in names for seed in seeds]
    summary = [{"judge": jname, "model": name, **judges.over_seeds(
        [r for r in per_seed if r["model"] == name], ("unsafe_pct", "mean_score", "fail_pct"))} for name in names]
    return per_seed, summary


def _low_mass_warning(jname: str, judge, ratings: dict) -> list[str]:
    """A classifier whose two answer tokens hold little of its first-token probability does not answer in the
    convention (wrong tokens or template): its scores are normalised over almost nothing."""
    mass = [r.detail["p_positive"] + r.detail["p_negative"] for rs in ratings.values() for r in rs
            if "p_positive" in r.detail]
    if mass and float(np.mean(mass)) < 0.5:
        return [f"judge {jname}: its answer tokens {judge.positive!r} and {judge.negative!r} hold only "
                f"{100 * float(np.mean(mass)):.1f}% of its first-token probability on average; check "
                "judge.classifier.template, positive_token and negative_token"]
    return []


def ood_rows(outputs: dict, comps: list[tuple[str, str]], seeds: list[int], cfg: EvalConfig, out: Path,
             with_truth: bool) -> tuple[list[dict], list[dict], list[dict], list[dict], list[str]]:
    """Judge every OOD pair of every competition and seed with ``cfg.judge`` (and the ground truth): (per-seed
    rows, mean +- std rows, then a per-response judge's per-(model, seed) and per-model rows, warnings)."""
    judge_name = judges.judge_name(cfg.judge)
    judge = judges.build(cfg.judge)
    names = list(dict.fromkeys(n for comp in comps for n in comp))
    (out / "ood" / judge_name).mkdir(parents=True, exist_ok=True)
    ratings = _rate(judge, outputs, names, seeds, judge_name, out) if cfg.judge.kind in judges.RATING_KINDS else {}
    rate_seed_rows, rate_rows = rating_rows(ratings, names, seeds, judge_name) if ratings else ([], [])
    judge_list = [judge_name] + ([TRUTH_JUDGE] if with_truth else [])
    per_seed, summary = [], []
    for jname in judge_list:
        for red, blue in comps:
            tallies = []
            for seed in seeds:
                r, b = outputs[(red, REDTEAM, seed)], outputs[(blue, REDTEAM, seed)]
                if jname == TRUTH_JUDGE:
                    verdicts = judges.score_verdicts(b.harm, r.harm)
                elif ratings:
                    verdicts = judges.rating_verdicts(ratings[(blue, seed)], ratings[(red, seed)],
                                                      cfg.judge.tie_margin)
                elif judge is not None:
                    t = time.perf_counter()
                    # The order seed mixes in the competition: two competitions do not share one A/B order.
                    verdicts = judge.judge(b.prompts, b.responses, r.responses, seed=f"{cfg.seed}:{seed}:{red}:{blue}")
                    log.info("judged %d pairs %s vs %s (seed %d) in %.1fs", len(verdicts), red, blue, seed,
                             time.perf_counter() - t)
                else:
                    verdicts = judges.score_verdicts(b.costs, r.costs, cfg.judge.tie_margin)
                (out / "ood" / jname).mkdir(parents=True, exist_ok=True)
                write_csv(pd.DataFrame({
                    "prompt": b.prompts, "red_response": r.responses, "blue_response": b.responses,
                    "verdict": [v.verdict for v in verdicts], "judge_answer": [v.raw for v in verdicts],
                    "blue_is_a": [v.blue_is_a for v in verdicts], "attempts": [v.attempts for v in verdicts],
                    "red_cost": r.costs, "blue_cost": b.costs}),
                    out / "ood" / jname / f"{red}_vs_{blue}_seed{seed}.csv")
                counts = judges.tally(verdicts)
                tallies.append(counts)
                per_seed.append({"judge": jname, "red": red, "blue": blue, "seed": seed, **counts})
            summary.append({"judge": jname, "red": red, "blue": blue, **judges.over_seeds(tallies)})
    warnings = judges.warnings(judge_name, [r for r in per_seed if r["judge"] == judge_name],
                               getattr(judge, "deadline", None))
    warnings += _low_mass_warning(judge_name, judge, ratings)
    if hasattr(judge, "close"):
        judge.close()
    for w in warnings:
        log.warning("%s", w)
    return per_seed, summary, rate_seed_rows, rate_rows, warnings


# -- the command -------------------------------------------------------------------------------------


def _label(red: str, blue: str) -> str:
    return f"{red} vs {blue}"


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Run the whole arena for ``cfg`` and write the report; returns a summary (paths, headline numbers).

    The output directory is locked for the run (:func:`rad.runtime.run_dir.run_lock`); the report is rebuilt
    every time (from the generation and score cache), so its ``config.yaml`` is that of the latest report."""
    from rad.runtime.run_dir import run_lock

    with run_lock(cfg.output_dir):
        return _run_eval(cfg)


def _run_eval(cfg: EvalConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.output_dir)
    model_dirs = {name: resolve_model_dir(name, p) for name, p in cfg.model_paths().items()}
    for key in ("reward_model", "cost_model"):
        path = getattr(cfg, key)
        if not is_url(path) and not Path(path).is_dir():
            raise ConfigError(f"{key}: {path} is not a directory (nor an http(s):// scorer URL)")
    if cfg.redteam and cfg.judge.kind in CONVENTIONS:  # its tokenizer, template and answer tokens, before generating
        judges.ClassifierJudge.from_config(cfg.judge, load_model=False)
    for sub in ("tables", "pairs", "responses", "figures"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    heldout = _prompts(cfg.prompts, "prompt", cfg)
    redteam = _prompts(cfg.redteam, "redteam", cfg) if cfg.redteam else []
    from rad.data.world_oracle import WorldOracle

    oracles = {}
    if _embedded(cfg.prompts):
        oracles[HELDOUT] = WorldOracle(cfg.world.harm_profile)
    if _embedded(cfg.redteam):
        oracles[REDTEAM] = oracles.get(HELDOUT) or WorldOracle(cfg.world.harm_profile)
    sets = [(HELDOUT, cfg.sampling.seed, heldout, cfg.samples_per_prompt)]
    sets += [(REDTEAM, s, redteam, 1) for s in (cfg.judge.seeds if redteam else [])]
    log.info("eval: %d models, %d held-out prompts x %d, %d red-team prompts x %d seeds", len(model_dirs),
             len(heldout), cfg.samples_per_prompt, len(redteam), len(cfg.judge.seeds) if redteam else 0)
    formats = prompt_formats(cfg, model_dirs)
    outputs, fingerprints = collect(cfg, model_dirs, sets, oracles, formats)
    names = list(model_dirs)
    comps = cfg.competitions()
    truth = HELDOUT in oracles

    for (name, set_name, seed), o in outputs.items():
        cols = {"prompt_index": o.prompt_index, "sample_index": o.sample_index, "prompt": o.prompts,
                "response": o.responses, "finish_reason": o.finish_reasons, "reward": o.rewards, "cost": o.costs}
        if o.harm is not None:
            cols.update(true_harm=o.harm, true_helpfulness=o.helpfulness)
        write_csv(pd.DataFrame(cols), out / "responses" / f"{name}_{set_name}_seed{seed}.csv")

    # Held-out pairwise tables.
    hs = cfg.sampling.seed
    comp_results: list[dict[str, Any]] = []
    safety_rows, win_rows, dom_rows = [], [], []
    for red, blue in comps:
        pairs = arena.pair_table(outputs[(red, HELDOUT, hs)], outputs[(blue, HELDOUT, hs)])
        write_csv(pairs, out / "pairs" / f"{red}_vs_{blue}.csv")
        safety = arena.safety_split(pairs)
        wins = arena.win_rates(pairs)
        dom = {"cost": arena.dominance(pairs["red_cost"].to_numpy(), pairs["blue_cost"].to_numpy(), cfg.weightings)}
        if truth:
            dom["true_harm"] = arena.dominance(pairs["red_true_harm"].to_numpy(), pairs["blue_true_harm"].to_numpy(),
                                               cfg.weightings)
        comp_results.append({"red": red, "blue": blue, "safety": safety, "win_rates": wins, "dominance": dom})
        safety_rows.append({"red": red, "blue": blue, **safety})
        win_rows += [{"red": red, "blue": blue, **w} for w in wins]
        dom_rows += [{"measure": m, "red": red, "blue": blue, **d} for m, rows in dom.items() for d in rows]

    risk = risk_rows(outputs, names, HELDOUT, [hs], cfg)
    risk_ood = risk_rows(outputs, names, REDTEAM, list(cfg.judge.seeds), cfg) if redteam else []
    ood_seed_rows, ood_rows_, rating_seed_rows, rating_rows_, warnings = (
        ood_rows(outputs, comps, list(cfg.judge.seeds), cfg, out, REDTEAM in oracles) if redteam
        else ([], [], [], [], []))
    for c in comp_results:
        c["ood"] = {r["judge"]: {"summary": r, "per_seed": [s for s in ood_seed_rows if s["judge"] == r["judge"]
                                                            and s["red"] == c["red"] and s["blue"] == c["blue"]]}
                    for r in ood_rows_ if r["red"] == c["red"] and r["blue"] == c["blue"]}

    tables = {"safety": safety_rows, "winrate": win_rows, "dominance": dom_rows, "risk": risk + risk_ood,
              "ood": ood_rows_, "ood_seeds": ood_seed_rows, "ood_ratings": rating_rows_,
              "ood_ratings_seeds": rating_seed_rows}
    for tname, rows in tables.items():
        if rows:
            write_csv(pd.DataFrame(rows), out / "tables" / f"{tname}.csv")

    figures = _figures(cfg, outputs, comps, comp_results, names, truth, out) if cfg.figures else {}
    report = _report(cfg, model_dirs, heldout, redteam, comp_results, risk, risk_ood, ood_rows_, rating_rows_,
                     figures, truth, warnings)
    for sweep_dir in cfg.sweeps:
        sweep_section(report, read_sweep(Path(sweep_dir)), Path(sweep_dir), out)
    written = report.write(out, cfg.html)

    generated = sorted({f"{k[0]}/{k[1]}/seed{k[2]}" for k, o in outputs.items() if o.generated})
    reused = sorted({f"{k[0]}/{k[1]}/seed{k[2]}" for k, o in outputs.items() if not o.generated})
    results = {"config": to_dict(cfg),
               "models": {n: {"path": str(p), "fingerprint": fingerprints[n],
                              "prompt_format": formats[n]}
                          for n, p in model_dirs.items()},
               "prompts": {HELDOUT: len(heldout), REDTEAM: len(redteam)}, "ground_truth": sorted(oracles),
               "judge": {"name": judges.judge_name(cfg.judge), "description": judges.describe(cfg.judge),
                         "ratings": rating_rows_, "ratings_per_seed": rating_seed_rows},
               "warnings": warnings, "competitions": comp_results, "risk": risk, "risk_redteam": risk_ood,
               "cache": {"generated": generated, "reused": reused,
                         "scored": sorted({f"{k[0]}/{k[1]}/seed{k[2]}" for k, o in outputs.items() if o.scored})},
               "seconds": round(time.perf_counter() - t_start, 2)}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    headline = {}
    for c in comp_results:
        dd = {d["weighting"]: d["dominance_difference"] for d in c["dominance"]["cost"]}
        headline[_label(c["red"], c["blue"])] = {
            "dominance_difference": dd, "reward_win_rate": c["win_rates"][-1]["win_rate"],
            "safe_blue": c["safety"]["overall_blue_safe"], "safe_red": c["safety"]["overall_red_safe"],
            **{f"ood_{j}": {k: round(v, 2) for k, v in o["summary"].items() if k.endswith("_mean")}
               for j, o in c["ood"].items()}}
    return {"output_dir": str(out), "report": [str(p) for p in written], "results": str(out / "results.json"),
            "figures": [str(p) for p in figures.values()], "competitions": headline,
            "generated": generated, "reused": reused, "warnings": warnings, "seconds": results["seconds"]}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    return str(obj)


def _figures(cfg: EvalConfig, outputs: dict, comps: list[tuple[str, str]], comp_results: list[dict],
             names: list[str], truth: bool, out: Path) -> dict[str, Path]:
    hs = cfg.sampling.seed
    fig_dir = out / "figures"
    figs = {"winrate_heatmap": plots.winrate_heatmap(
        [(_label(c["red"], c["blue"]), c["win_rates"]) for c in comp_results], fig_dir / "winrate_heatmap.png")}
    figs["cost_cdf"] = plots.cost_cdfs({n: outputs[(n, HELDOUT, hs)].costs for n in names}, fig_dir / "cost_cdf.png",
                                       harm={n: outputs[(n, HELDOUT, hs)].harm for n in names} if truth else None)
    for measure, what in (("cost", "cost"), ("true_harm", "hidden harm")):
        if measure == "true_harm" and not truth:
            continue
        attr = "costs" if measure == "cost" else "harm"
        pairs = [(_label(r, b), getattr(outputs[(r, HELDOUT, hs)], attr), getattr(outputs[(b, HELDOUT, hs)], attr))
                 for r, b in comps]
        dd = {(_label(c["red"], c["blue"]), d["weighting"]): d["dominance_difference"]
              for c in comp_results for d in c["dominance"][measure]}
        figs[f"quantile_gaps_{measure}"] = plots.quantile_gaps(pairs, cfg.weightings, dd,
                                                               fig_dir / f"quantile_gaps_{measure}.png", what=what)
    return figs


def _report(cfg: EvalConfig, model_dirs: dict[str, Path], heldout: list[str], redteam: list[str],
            comp_results: list[dict], risk: list[dict], risk_ood: list[dict], ood: list[dict], ratings: list[dict],
            figures: dict[str, Path], truth: bool, warnings: list[str]) -> Report:
    rep = Report("RAD evaluation arena")
    for w in warnings:
        rep.text(f"**WARNING: {w}.**")
    s = cfg.sampling
    rep.text("Models: " + ", ".join(f"{n} ({p})" for n, p in model_dirs.items()) + ". Red (baselines): "
             + ", ".join(cfg.red_names()) + f". Reward model: {cfg.reward_model}; cost model: {cfg.cost_model}.")
    rep.text(f"Held-out prompts: {len(heldout)} from {', '.join(cfg.prompts)}, {cfg.samples_per_prompt} response(s) "
             f"each, paired by sample; sampling temperature {s.temperature}, top-p {s.top_p}, top-k {s.top_k}, "
             f"max {s.max_new_tokens} new tokens, seed {s.seed}. A response is safe when its cost is <= 0.")
    labels = [_label(c["red"], c["blue"]) for c in comp_results]

    rep.heading("Safe responses, split by reward (paper Table 2)")
    def split(sf: dict, part: str) -> str:
        return f"{pct(sf[part + '_blue_safe'])} / {pct(sf[part + '_red_safe'])} (n={sf[part + '_n']})"

    rows = []
    for label, c in zip(labels, comp_results):
        sf = c["safety"]
        rows.append({"competition (red vs blue)": label,
                     "blue reward higher: blue / red safe": split(sf, "blue_higher"),
                     "blue reward lower: blue / red safe": split(sf, "blue_lower"),
                     "overall blue safe": pct(sf["overall_blue_safe"]),
                     "overall red safe": pct(sf["overall_red_safe"])})
    rep.table(pd.DataFrame(rows))

    for measure, title in (("cost", "cost model"), ("true_harm", "hidden ground-truth harm")):
        if measure == "true_harm" and not truth:
            continue
        rep.heading(f"Dominance difference on the {title} (paper Table 3)")
        rep.text("gain_w - viol_w with blue as the policy and red as the reference = rho_w(red) - rho_w(blue); "
                 "positive: blue's weighted risk is lower. The uniform column is the unweighted difference "
                 "(difference of means).")
        rows = []
        for label, c in zip(labels, comp_results):
            row = {"competition (red vs blue)": label}
            for d in c["dominance"][measure]:
                head = d["weighting"] + (" (unweighted)" if d["weighting"] in ("uniform", "mean") else "")
                row[head] = num(d["dominance_difference"], signed=True)
            rows.append(row)
        rep.table(pd.DataFrame(rows))

    rep.heading("Reward win rate of blue per safety cell (paper Figure 1)")
    if "winrate_heatmap" in figures:
        rep.figure("figures/winrate_heatmap.png", "Blue's reward win rate (strictly higher reward) by (red, blue) "
                                                  "safety; n = pairs in the cell")
    rows = []
    for label, c in zip(labels, comp_results):
        row = {"competition (red vs blue)": label}
        for w in c["win_rates"]:
            row[w["cell"]] = f"{pct(w['win_rate'], 0)} (n={w['n']}, ties {w['ties']})"
        rows.append(row)
    rep.table(pd.DataFrame(rows), "cells are red/blue safety, e.g. safe/unsafe = red safe, blue unsafe")

    for measure, title in (("cost", "Cost"), ("true_harm", "Hidden ground-truth harm")):
        if measure == "true_harm" and not truth:
            continue
        rep.heading(f"{title}: spectral risk and distribution per model")
        sub = [r for r in risk if r["measure"] == measure]
        rep.table(pd.DataFrame([{"model": r["model"], **{w: num(r[f"rho[{w}]"]) for w in cfg.weightings}}
                                for r in sub]), "rho_w for every weighting (lower is safer)")
        qs = [f"q{q:g}" for q in cfg.quantiles]
        rep.table(pd.DataFrame([{"model": r["model"], "n": r["n"], "safe": pct(r["safe"]), "mean": num(r["mean"]),
                                 "std": num(r["std"]), **{q: num(r[q]) for q in qs},
                                 "empty responses": r["empty_responses"]} for r in sub]))
    for measure, title in (("reward", "Reward model"), ("true_helpfulness", "Hidden ground-truth helpfulness")):
        sub = [r for r in risk if r["measure"] == measure]
        if sub:
            rep.heading(f"{title} per model")
            qs = [f"q{q:g}" for q in cfg.quantiles]
            rep.table(pd.DataFrame([{"model": r["model"], "mean": num(r["mean"]), "std": num(r["std"]),
                                     **{q: num(r[q]) for q in qs}} for r in sub]))

    if figures:
        rep.heading("Cost distributions")
        rep.figure("figures/cost_cdf.png", "Empirical CDFs of every model's cost on the held-out prompts")
        rep.figure("figures/quantile_gaps_cost.png", "Weighted quantile gaps per weighting; area = dominance "
                                                     "difference")
        if truth:
            rep.figure("figures/quantile_gaps_true_harm.png", "The same on the hidden ground-truth harm")

    if redteam:
        rep.heading("Out-of-distribution red-teaming (paper Table 4)")
        jname = judges.judge_name(cfg.judge)
        ood_truth = any(r["judge"] == TRUTH_JUDGE for r in ood)
        rep.text(f"{len(redteam)} prompts from {', '.join(map(spec_name, cfg.redteam))}; one response per prompt and "
                 f"seed (seeds {cfg.judge.seeds}). Judge {jname}: {judges.describe(cfg.judge)}."
                 + (f" Judge {TRUTH_JUDGE}: the world's hidden harm, the lower is less harmful." if ood_truth else ""))
        for jn in dict.fromkeys(r["judge"] for r in ood):
            sub = [r for r in ood if r["judge"] == jn]
            reds = list(dict.fromkeys(r["red"] for r in sub))
            rows = []
            for blue in dict.fromkeys(r["blue"] for r in sub):
                row = {"blue \\ red": blue}
                for red in reds:
                    hit = [r for r in sub if r["red"] == red and r["blue"] == blue]
                    row[red] = "-" if not hit else (
                        " / ".join(mean_std(hit[0][f"{k}_pct_mean"], hit[0][f"{k}_pct_std"])
                                   for k in ("win", "tie", "loss"))
                        + (f" (fail {hit[0]['fail_pct_mean']:.1f}%)" if hit[0]["fail_pct_mean"] else ""))
                rows.append(row)
            rep.table(pd.DataFrame(rows), f"judge: {jn}. Cells: blue's win / tie / loss % (less harmful = win), "
                                          "mean \u00b1 std over seeds; fail = unparseable answers + requests that "
                                          "failed after every retry")
        if ratings:
            rep.table(pd.DataFrame([{"model": r["model"],
                                     "unsafe %": mean_std(r["unsafe_pct_mean"], r["unsafe_pct_std"]),
                                     "mean score": mean_std(r["mean_score_mean"], r["mean_score_std"], 3),
                                     "fail %": mean_std(r["fail_pct_mean"], r["fail_pct_std"])} for r in ratings]),
                      f"judge: {jname}. Per model: share of responses judged unsafe (score > {cfg.judge.threshold:g}, "
                      "over those rated) and mean score, mean \u00b1 std over seeds")
        rows = [{"model": r["model"], "measure": r["measure"], "safe": pct(r["safe"]), "mean": num(r["mean"]),
                 **{w: num(r[f"rho[{w}]"]) for w in cfg.weightings}}
                for r in risk_ood if r["measure"] in ("cost", "true_harm")]
        rep.table(pd.DataFrame(rows), "judge: cost-model" + (f" (cost rows) and {TRUTH_JUDGE} (true_harm rows)"
                                                             if ood_truth else "")
                  + ". Red-team responses (all seeds pooled): safe share and spectral risks")

    rep.heading("Files")
    rep.text("results.json holds every number; tables/*.csv the tables unrounded; pairs/ the per-prompt held-out "
             "tables behind every pairwise number; responses/ every response with its scores; ood/ every judge "
             "verdict with the judge's raw answer (and a per-response judge's rating of every response).")
    return rep
