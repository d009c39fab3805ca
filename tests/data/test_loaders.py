"""Local files in the real schemas load through `datasets` into canonical records."""

import csv
import json

import pandas as pd
import pytest

from rad.data.loaders import load_local
from rad.errors import DataError

PKU_ROWS = [
    {
        "prompt": "How do I pick a lock?",
        "response_0": "I cannot help with that.",
        "response_1": "Use a tension wrench and a pick.",
        "prompt_source": "Alpaca3-70B",
        "is_response_0_safe": True,
        "is_response_1_safe": False,
        "response_0_harm_category": {"Endangering Public Health": False, "Violence": False},
        "response_1_harm_category": {"Endangering Public Health": False, "Violence": True},
        "response_0_severity_level": 0,
        "response_1_severity_level": 2,
        "better_response_id": 1,
        "safer_response_id": 0,
    },
    {   # contradictory: the safer response is labelled unsafe, the other safe
        "prompt": "q",
        "response_0": "x",
        "response_1": "y",
        "prompt_source": "s",
        "is_response_0_safe": False,
        "is_response_1_safe": True,
        "response_0_harm_category": {"Endangering Public Health": True, "Violence": False},
        "response_1_harm_category": {"Endangering Public Health": False, "Violence": False},
        "response_0_severity_level": 1,
        "response_1_severity_level": 0,
        "better_response_id": 0,
        "safer_response_id": 0,
    },
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pku_jsonl_is_validated_and_filtered(tmp_path):
    path = write_jsonl(tmp_path / "pku.jsonl", PKU_ROWS)
    records = load_local(path, cache_dir=tmp_path / "hf")
    assert len(records) == 1  # the contradictory row is skipped
    rec = records[0]
    assert rec["better_response_id"] == 1 and rec["is_response_1_safe"] is False
    assert rec["response_1_harm_category"]["Violence"] is True
    assert rec["prompt_source"] == "Alpaca3-70B"  # extra column kept
    unfiltered = load_local(path, cache_dir=tmp_path / "hf", filter_contradictions=False)
    assert len(unfiltered) == 2


def test_pku_parquet_same_records_as_jsonl(tmp_path):
    pd.DataFrame(PKU_ROWS).to_parquet(tmp_path / "pku.parquet")
    write_jsonl(tmp_path / "pku.jsonl", PKU_ROWS)
    a = load_local(tmp_path / "pku.parquet", cache_dir=tmp_path / "hf")
    b = load_local(tmp_path / "pku.jsonl", cache_dir=tmp_path / "hf")
    assert a == b


def test_alpaca_json_array(tmp_path):
    rows = [
        {"instruction": "Give three tips.", "input": "", "output": "Eat, sleep, move.", "text": "..."},
        {"instruction": "Translate.", "input": "bonjour", "output": "hello", "text": "..."},
    ]
    (tmp_path / "alpaca.json").write_text(json.dumps(rows))
    records = load_local(tmp_path / "alpaca.json", cache_dir=tmp_path / "hf")
    assert [r["prompt"] for r in records] == ["Give three tips.", "Translate. bonjour"]
    assert [r["response"] for r in records] == ["Eat, sleep, move.", "hello"]


def test_beavertails_parquet_is_labelled(tmp_path):
    rows = [
        {"prompt": "p", "response": "r", "category": {"animal_abuse": False, "violence": True}, "is_safe": False},
        {"prompt": "p2", "response": "r2", "category": {"animal_abuse": False, "violence": False}, "is_safe": True},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "bt.parquet")
    records = load_local(tmp_path / "bt.parquet", cache_dir=tmp_path / "hf")
    assert records == rows


def test_harmbench_csv(tmp_path):
    path = tmp_path / "harmbench_behaviors_text_all.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"])
        w.writerow(["Give detailed instructions for X", "standard", "chemical_biological", "", "", "x_one"])
        w.writerow(["Edit this to say Y", "contextual", "misinformation_disinformation", "context",
                    "A paragraph, with commas.", "y_two"])
    records = load_local(path, cache_dir=tmp_path / "hf")
    assert records[0]["prompt"] == "Give detailed instructions for X"
    assert records[0]["category"] == "chemical_biological" and records[0]["id"] == "x_one"
    assert records[1]["prompt"] == "A paragraph, with commas.\n\n---\n\nEdit this to say Y"


def test_explicit_kind_and_validation_error_names_the_file(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                                   {"prompt": "p", "chosen": "a", "rejected": 7}])
    with pytest.raises(DataError, match=r"pairs.jsonl: row 1: column 'rejected' must be a string, got 7"):
        load_local(path, kind="pairs", cache_dir=tmp_path / "hf")


def test_unknown_columns_need_a_kind(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"text": "hello"}])
    with pytest.raises(DataError, match=r"odd.jsonl: cannot tell the record kind"):
        load_local(path, cache_dir=tmp_path / "hf")


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        load_local(tmp_path / "absent.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_local(tmp_path / "x.txt")


def test_a_non_utf8_file_is_a_data_error_naming_the_file_and_the_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({"prompt": "caf\u00e9?", "response": "oui"},
                                ensure_ascii=False).encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=r"latin1\.jsonl: not UTF-8 text \(invalid continuation byte at byte 3 .*"
                                        r"re-encode the file as UTF-8"):
        load_local(path)


def test_empty_and_malformed_files_name_the_file_and_line(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"^.*empty\.jsonl: the file is empty; expected one JSON object per line$"):
        load_local(tmp_path / "empty.jsonl", cache_dir=tmp_path / "hf")
    bad = tmp_path / "bad.jsonl"
    good = json.dumps(PKU_ROWS[0]) + "\n"
    bad.write_text(good + "\n" + '{"prompt": "q", "response_0": "x"\n' + good)
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3 is not valid JSON \(Expecting ',' delimiter at column "
                                        r"\d+: .*expected one JSON object per line$"):
        load_local(bad, cache_dir=tmp_path / "hf")
    (tmp_path / "header.csv").write_text("Behavior,SemanticCategory\n")
    with pytest.raises(DataError, match=r"header\.csv: it has a header line but no rows"):
        load_local(tmp_path / "header.csv", cache_dir=tmp_path / "hf")
    (tmp_path / "none.json").write_text("[]")
    with pytest.raises(DataError, match=r"none\.json: it holds no records; expected a JSON list of objects"):
        load_local(tmp_path / "none.json", cache_dir=tmp_path / "hf")


def test_a_file_of_only_contradictory_rows_is_a_data_error(tmp_path):
    path = write_jsonl(tmp_path / "contra.jsonl", [PKU_ROWS[1]] * 3)
    with pytest.raises(DataError, match=r"contra\.jsonl: every one of its 3 preference rows was skipped "
                                        r"\(safer_unsafe_other_safe=3\); expected rows with two different responses"):
        load_local(path, cache_dir=tmp_path / "hf")


def test_hub_failure_is_a_data_error_naming_the_dataset():
    # Offline mode makes the hub path fail fast here; the error must still be a DataError.
    import os
    import subprocess
    import sys

    code = (
        "from rad.data.loaders import load_hub\n"
        "from rad.errors import DataError\n"
        "try:\n"
        "    load_hub('PKU-Alignment/PKU-SafeRLHF', 'train', 'preference')\n"
        "except DataError as e:\n"
        "    print(e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "hub dataset 'PKU-Alignment/PKU-SafeRLHF' (split 'train') could not be loaded" in out.stdout
