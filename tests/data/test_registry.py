"""Spec parsing, deterministic sub-sampling, combining specs, registry errors, the embedded sets."""

import json
import os
import subprocess
import sys

import pytest

from rad.data.registry import (
    DatasetSpec,
    load_dataset,
    load_dataset_spec,
    parse_spec,
    register_dataset,
    registered_names,
    subsample,
)
from rad.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("rad-data")


def preference_rows(n: int, contradictory=(), identical=(), empty=()) -> list[dict]:
    """``n`` preference rows; the given rows are contradictory (safer one labelled unsafe, the other safe), have
    two identical responses, or an empty response_1."""
    rows = []
    for i in range(n):
        row = {"prompt": f"p{i}", "response_0": f"no {i}", "response_1": f"yes {i}", "better_response_id": 1,
               "safer_response_id": 0, "is_response_0_safe": True, "is_response_1_safe": False}
        if i in contradictory:
            row.update(is_response_0_safe=False, is_response_1_safe=True)
        if i in identical:
            row.update(response_1=f" no {i} ")
        if i in empty:
            row.update(response_1="  ")
        rows.append(row)
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "spec,parsed",
    [
        ("pku-saferlhf/train", DatasetSpec("pku-saferlhf/train")),
        ("pku-saferlhf/train:0.5", DatasetSpec("pku-saferlhf/train", proportion=0.5)),
        ("a:1", DatasetSpec("a", proportion=1.0)),
        ("a:1.0", DatasetSpec("a", proportion=1.0)),
        ("a:.25", DatasetSpec("a", proportion=0.25)),
        ("a:1000", DatasetSpec("a", count=1000)),
        ("/x/y.jsonl:0.5", DatasetSpec("/x/y.jsonl", proportion=0.5)),
        ("data/z.parquet", DatasetSpec("data/z.parquet")),
        (" b ", DatasetSpec("b")),
    ],
)
def test_parse_spec(spec, parsed):
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["a:0", "a:1.5", "a:0.0", ":0.5", ""])
def test_parse_spec_rejects(spec):
    with pytest.raises(ConfigError):
        parse_spec(spec)


def test_subsample_deterministic_nested_and_ordered():
    rows = [{"i": i} for i in range(200)]
    half = subsample(rows, DatasetSpec("d", proportion=0.5), seed=3)
    assert half == subsample(rows, DatasetSpec("d", proportion=0.5), seed=3)
    assert len(half) == 100 and [r["i"] for r in half] == sorted(r["i"] for r in half)
    quarter = subsample(rows, DatasetSpec("d", proportion=0.25), seed=3)
    assert {r["i"] for r in quarter} <= {r["i"] for r in half}
    assert half != subsample(rows, DatasetSpec("d", proportion=0.5), seed=4)
    assert half != subsample(rows, DatasetSpec("other", proportion=0.5), seed=3)
    assert len(subsample(rows, DatasetSpec("d", count=7), seed=0)) == 7
    assert subsample(rows, DatasetSpec("d", count=500), seed=0) == rows
    assert subsample(rows, DatasetSpec("d"), seed=0) == rows


def test_subsample_is_the_same_in_another_process():
    code = (
        "from rad.data.registry import subsample, DatasetSpec;"
        "print([r['i'] for r in subsample([{'i': i} for i in range(50)], DatasetSpec('d', proportion=0.3), 11)])"
    )
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    here = [r["i"] for r in subsample([{"i": i} for i in range(50)], DatasetSpec("d", proportion=0.3), 11)]
    assert json.loads(out.stdout) == here


def test_local_file_specs_combine(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "response": "r"} for i in range(40)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "response": "r"} for i in range(10)])
    part = load_dataset_spec(f"{a}:0.5", kind="sft", seed=1, data_root=tmp_path)
    assert len(part) == 20 and part == load_dataset_spec(f"{a}:0.5", kind="sft", seed=1, data_root=tmp_path)
    both = load_dataset_spec([f"{a}:0.5", str(b)], seed=1, data_root=tmp_path)
    assert both == part + load_dataset_spec(str(b), data_root=tmp_path)
    prompts = load_dataset_spec(str(b), kind="prompt", data_root=tmp_path)
    assert prompts == [{"prompt": f"b{i}"} for i in range(10)]


def test_mixed_kinds_are_refused(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "response": "r"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "chosen": "x", "rejected": "y"}])
    with pytest.raises(ConfigError, match="different kinds"):
        load_dataset_spec([str(a), str(b)], data_root=tmp_path)


def test_unknown_name_lists_registered_names():
    with pytest.raises(ConfigError) as err:
        load_dataset_spec("no-such-set:0.5")
    msg = str(err.value)
    assert "unknown dataset 'no-such-set'" in msg
    assert all(name in msg for name in ("pku-saferlhf/train", "embedded/pref-train", "alpaca", "harmbench"))


def test_register_dataset_decorator_and_duplicates(tmp_path):
    @register_dataset("test/custom-sft", kind="sft", overwrite=True)
    def _load(ctx):
        return [{"instruction": f"do {i}", "input": "", "output": "ok"} for i in range(8)]

    assert "test/custom-sft" in registered_names()
    records = load_dataset_spec("test/custom-sft:0.5", seed=0, data_root=tmp_path)
    assert len(records) == 4 and records[0]["response"] == "ok"
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("test/custom-sft", "sft", _load)
    with pytest.raises(ConfigError, match="unknown kind"):
        register_dataset("test/bad", "tabular", _load)
    # Asking for another kind validates against it: the error names the missing column.
    with pytest.raises(DataError, match=r"test/custom-sft: row 0: required column 'chosen' is missing"):
        load_dataset_spec("test/custom-sft", kind="pairs", data_root=tmp_path)


def test_harmbench_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match=r"harmbench_behaviors_text_all.csv.*download https://"):
        load_dataset_spec("harmbench", data_root=tmp_path)


def test_embedded_sets_load_in_their_kinds(data_root):
    pref = load_dataset_spec("embedded/pref-train", data_root=data_root)
    assert 3500 < len(pref) < 4000  # contradictory / identical rows filtered out
    assert {"harm_0", "help_1", "category"} <= set(pref[0])
    sft = load_dataset_spec("embedded/sft-train:0.1", data_root=data_root)
    assert len(sft) == 300 and set(sft[0]) >= {"prompt", "response"}
    red = load_dataset_spec("embedded/redteam", data_root=data_root)
    assert len(red) == 160 and red[0]["id"].startswith("world_redteam_")
    train_prompts = load_dataset_spec("embedded/prompts-train", data_root=data_root)
    test_prompts = load_dataset_spec("embedded/prompts-test", data_root=data_root)
    assert not {r["prompt"] for r in train_prompts} & {r["prompt"] for r in test_prompts}
    from_pref = load_dataset_spec("embedded/pref-train", kind="prompt", data_root=data_root)
    assert {r["prompt"] for r in from_pref} <= {r["prompt"] for r in train_prompts}


def test_records_know_their_file_row_and_skipped_rows_are_counted(tmp_path):
    rows = preference_rows(14, contradictory=(2, 5, 7), identical=(9,))
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    data = load_dataset([str(path), f"{path}:4"], kind="preference", data_root=tmp_path)
    assert len(data.records) == 10 + 4 and len(data.origins) == len(data.records)
    assert dict(data.skipped) == {"safer_unsafe_other_safe": 6, "identical_responses": 2}  # counted per spec read
    assert [o.rsplit(" row ", 1)[1] for o in data.origins[:10]] == ["0", "1", "3", "4", "6", "8", "10", "11", "12",
                                                                     "13"]
    assert all(o.startswith(f"{path} row ") for o in data.origins)
    assert [r["prompt"] for r in data.records[10:]] == [rows[int(o.rsplit(" ", 1)[1])]["prompt"]
                                                         for o in data.origins[10:]]
    prompts = load_dataset(str(path), kind="prompt", data_root=tmp_path)
    assert [o.rsplit(" ", 1)[1] for o in prompts.origins[:3]] == ["0", "1", "3"]
