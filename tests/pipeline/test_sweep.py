"""``rad sweep``: grid and seed parsing, cells and upstream groups, and the sweep end to end on a tiny grid."""

import json
from pathlib import Path

import pytest

from rad.cli import main
from rad.errors import ConfigError
from rad.eval.sweep_report import t_interval
from rad.sweep import Sweep, expand, parse_grid, parse_seeds

CONFIGS = Path(__file__).resolve().parents[2] / "launch" / "configs"
SMOKE = CONFIGS / "smoke.yaml"


@pytest.mark.parametrize("grid, needle", [
    ("rad.algo.delta", r"--grid 'rad.algo.delta': expected KEY=V1,V2,\.\.\. with a dotted config key"),
    ("=0.5,1", r"--grid '=0.5,1': expected KEY=V1,V2"),
    ("rad..delta=1", r"--grid 'rad..delta=1': expected KEY=V1,V2"),
    ("rad.algo.delta=0.5,,1", r"--grid 'rad.algo.delta=0.5,,1': empty value"),
    ("rad.algo.delta=1,1", r"--grid 'rad.algo.delta=1,1': a value is listed twice"),
    ("seed=1,2", r"--grid 'seed=1,2': seed is set by the sweep itself \(use --seeds\)"),
])
def test_bad_grid_values_fail_naming_the_value(grid, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_grid([grid])


def test_grid_parsing_keeps_list_values_and_refuses_a_key_twice():
    assert parse_grid(["rad.algo.weighting=cvar:0.9,uniform", "rad.data.prompts=[a,b],c"]) == [
        ("rad.algo.weighting", ["cvar:0.9", "uniform"]), ("rad.data.prompts", ["[a,b]", "c"])]
    with pytest.raises(ConfigError, match=r"--grid 'rad.algo.delta=2': rad.algo.delta is swept twice"):
        parse_grid(["rad.algo.delta=1", "rad.algo.delta=2"])


@pytest.mark.parametrize("text, seeds", [("3", [3]), ("0-4", [0, 1, 2, 3, 4]), ("0,2,2,5", [0, 2, 5]),
                                         ("0-1,4", [0, 1, 4])])
def test_seed_ranges(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "4-1", "-1", "1-"])
def test_bad_seeds_fail_naming_the_value(text):
    with pytest.raises(ConfigError, match=rf"--seeds '{text}': expected N, A-B \(A <= B\) or N,M"):
        parse_seeds(text)


def test_cells_and_upstream_groups(tmp_path):
    grid = parse_grid(["rad.algo.delta=0.25,1.0", "sft.learner.lr=1e-3,3e-3,1e-2"])
    cells = expand([0, 1], grid)
    assert len(cells) == 12 and len({c.name for c in cells}) == 12
    assert cells[0].setting == "rad.algo.delta=0.25,sft.learner.lr=1e-3" and cells[0].name.endswith("-seed0")
    shared = Sweep(str(SMOKE), [0, 1], grid, [], tmp_path)
    dirs = {shared.upstream_dir(c)[0] for c in cells}
    assert dirs == {tmp_path / "upstream" / f"sft.learner.lr={lr}" for lr in ("1e-3", "3e-3", "1e-2")}
    per_seed = Sweep(str(SMOKE), [0, 1], grid[:1], [], tmp_path, upstream="per-seed")
    d, extra = per_seed.upstream_dir(expand([1], grid[:1])[0])
    assert d == tmp_path / "upstream" / "base-seed1" and extra == ["seed=1"]


def test_parallel_ray_cells_need_placement_naming_the_key(tmp_path):
    sweep = Sweep(str(SMOKE), [0], parse_grid(["rad.algo.delta=0.25,1.0"]), ["stages=[sft,reward,cost,rad]"],
                  tmp_path, executor="ray", max_parallel=2)
    with pytest.raises(ConfigError, match=r"--max-parallel 2: rad.resources.placement is none; set it to pack"):
        sweep.validate()
    sweep.overrides.append("rad.resources.placement=pack")
    assert sweep.validate().rad.resources.placement == "pack"


def test_zipped_grids_pair_their_values_and_refuse_unequal_lengths():
    grid = parse_grid(["rad.algo.delta=0.25,1.0", "ppo_lag.algo.threshold=-3,-3.3"])
    cells = expand([0, 1], grid, paired=True)
    assert [c.setting for c in cells[::2]] == ["rad.algo.delta=0.25,ppo_lag.algo.threshold=-3",
                                               "rad.algo.delta=1.0,ppo_lag.algo.threshold=-3.3"]
    assert [c.seed for c in cells] == [0, 1, 0, 1]
    with pytest.raises(ConfigError, match=r"--zip: every --grid needs the same number of values"):
        expand([0], parse_grid(["rad.algo.delta=0.25,1.0", "ppo_lag.algo.threshold=-3"]), paired=True)


def test_a_grid_value_the_config_refuses_is_one_line_naming_it(tmp_path, capsys):
    rc = main(["sweep", "--config", str(SMOKE), "--seeds", "0", "--grid", "rad.algo.delta=0.5,-1",
               "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith("rad sweep: error: --grid rad.algo.delta=-1: ") and "rad.algo.delta" in err[40:]
    rc = main(["sweep", "--config", str(SMOKE), "--seeds", "0", "--grid", "rad.algo.dleta=1",
               "--output-dir", str(tmp_path)])
    assert rc == 2 and "--grid rad.algo.dleta=1: " in capsys.readouterr().err
    assert not (tmp_path / "cells").exists()  # nothing ran


RL = ["logging.tensorboard=false", "logging.progress=false", "stages=[sft,reward,cost,rad]",
      "rad.algo.steps=1", "rad.algo.selection.rule=last", "rad.data.eval_prompts=embedded/prompts-test:4"]


@pytest.mark.slow
def test_sweep_runs_cells_on_shared_upstream_aggregates_and_resumes(ray_cluster, tmp_path, sft_model_dir,
                                                                    score_dirs):
    out = tmp_path / "sweep"
    # The upstream group, finished by an earlier run: the session's SFT and score models.
    up = out / "upstream" / "base"
    for stage, model in (("sft", sft_model_dir), ("reward", score_dirs["reward"]), ("cost", score_dirs["cost"])):
        (up / stage).mkdir(parents=True)
        (up / stage / "model").symlink_to(model)
    (up / "summary.json").write_text(json.dumps({"stages": {s: {"fixture": s} for s in ("sft", "reward", "cost")}}))

    argv = ["sweep", "--config", str(SMOKE), "--seeds", "0-1", "--grid", "rad.algo.delta=0.25,1.0",
            "--output-dir", str(out), *RL, "rad.resources.placement=pack"]
    # Seed 0's cells one after another here; then seed 1's as two Ray tasks at once, seed 0's skipped.
    assert main([*argv[:4], "0", *argv[5:]]) == 0
    first = json.loads((out / "sweep.json").read_text())
    assert first["ran"] == ["rad.algo.delta=0.25-seed0", "rad.algo.delta=1.0-seed0"] and first["executor"] == "local"
    assert main([*argv, "--executor", "ray", "--max-parallel", "2"]) == 0
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["rad.algo.delta=0.25-seed0", "rad.algo.delta=0.25-seed1", "rad.algo.delta=1.0-seed0",
                     "rad.algo.delta=1.0-seed1"]
    for name in cells:
        cell = out / "cells" / name
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["stages"]["sft"] == {"fixture": "sft", "upstream": str(up)}  # shared, not retrained
        assert (cell / "sft" / "model").resolve() == Path(sft_model_dir).resolve()
        assert (cell / "rad" / "model" / "config.json").is_file()
        seed, delta = int(name[-1]), name.split("=")[1].split("-")[0]
        cfg = (cell / "rad" / "config.yaml").read_text()
        assert f"seed: {seed}" in cfg and f"delta: {delta}" in cfg
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["ran"] == ["rad.algo.delta=0.25-seed1", "rad.algo.delta=1.0-seed1"] and sweep["executor"] == "ray"
    assert sweep["skipped"] == first["ran"]
    assert [s["setting"] for s in sweep["settings"]] == ["rad.algo.delta=0.25", "rad.algo.delta=1.0"]
    for setting in sweep["settings"]:
        win = setting["metrics"]["rad/reward_win_rate"]
        per_seed = [json.loads((out / "cells" / f"{setting['setting']}-seed{s}" / "summary.json").read_text())
                    ["stages"]["rad"]["heldout"]["reward_win_rate"] for s in (0, 1)]
        assert win["values"] == {"0": per_seed[0], "1": per_seed[1]}
        assert {k: win[k] for k in ("mean", "n")} == {k: t_interval(per_seed)[k] for k in ("mean", "n")}
        assert "rad/true_harm_cvar_0.9_policy" in setting["metrics"]
    assert "| rad/reward_win_rate |" in (out / "sweep.md").read_text()
    assert (out / "figures" / "pareto.png").stat().st_size > 10_000

    stamps = {c: (out / "cells" / c / "summary.json").stat().st_mtime_ns for c in cells}
    assert main(argv) == 0  # resumed: every cell is finished
    again = json.loads((out / "sweep.json").read_text())
    assert again["ran"] == [] and again["skipped"] == [c["name"] for c in sweep["cells"]]
    assert {c: (out / "cells" / c / "summary.json").stat().st_mtime_ns for c in cells} == stamps
    assert again["settings"] == sweep["settings"]
