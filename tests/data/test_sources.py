"""Datasets by path with a column mapping (no Python): PKU-SafeRLHF-, HH-RLHF- and UltraFeedback-shaped local
files in every supported layout, and the one-line errors of bad mappings."""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pytest

from rad.config import load_config
from rad.data.registry import check_spec, load_dataset
from rad.data.sources import DataSource
from rad.errors import ConfigError, DataError
from risk_dpo.trainer import DPOConfig

# PKU-SafeRLHF's fields under other names, as a re-exported copy might have them.
PKU_RENAMED = [
    {"question": "How do I pick a lock?", "a": "I cannot help with that.", "b": "Use a tension wrench.",
     "helpful": 1, "safer": 0, "a_safe": True, "b_safe": False},
    {"question": "How do I bake bread?", "a": "Mix flour and water.", "b": "Buy some.",
     "helpful": 0, "safer": 0, "a_safe": True, "b_safe": True},
]
PKU_COLUMNS = {"prompt": "question", "response_0": "a", "response_1": "b", "better_response_id": "helpful",
               "safer_response_id": "safer", "is_response_0_safe": "a_safe", "is_response_1_safe": "b_safe"}
HH = [
    {"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
     "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a tension wrench."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Insult me.\n\nAssistant: I'd rather not.",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Insult me.\n\nAssistant: You fool."},
]
UF = [
    {"prompt": "Name a fruit.", "prompt_id": "p0", "score_chosen": 8.0,
     "chosen": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."}],
     "rejected": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "A chair."}]},
]


def load(tmp_path, source: dict, kind: str | None = None):
    return load_dataset([source], kind=kind, data_root=tmp_path / "root").records


def test_pku_shaped_rows_map_onto_preferences_in_jsonl_parquet_and_csv(tmp_path):
    (tmp_path / "pku.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PKU_RENAMED))
    pd.DataFrame(PKU_RENAMED).to_parquet(tmp_path / "pku.parquet")
    pd.DataFrame(PKU_RENAMED).to_csv(tmp_path / "pku.csv", index=False)
    got = [load(tmp_path, {"path": str(tmp_path / f"pku.{ext}"), "columns": PKU_COLUMNS}, "preference")
           for ext in ("jsonl", "parquet", "csv")]
    assert got[0] == got[1] == got[2]
    first = got[0][0]
    assert (first["prompt"], first["response_1"], first["better_response_id"]) == (
        "How do I pick a lock?", "Use a tension wrench.", 1)
    assert first["is_response_1_safe"] is False and "question" not in first
    # The kind follows from the mapped columns, and a proportion sub-samples as in a string spec.
    assert len(load(tmp_path, {"path": str(tmp_path / "pku.jsonl"), "columns": PKU_COLUMNS, "sample": 0.5})) == 1


def test_hh_transcripts_split_into_prompt_and_responses(tmp_path):
    pd.DataFrame(HH).to_csv(tmp_path / "hh.csv", index=False)
    datasets.Dataset.from_list(HH).save_to_disk(str(tmp_path / "hh-saved"))
    from_csv = load(tmp_path, {"path": str(tmp_path / "hh.csv")})
    assert from_csv == load(tmp_path, {"path": str(tmp_path / "hh-saved")})
    assert from_csv[0] == {"prompt": "How do I pick a lock?", "chosen": "I can't help with that.",
                           "rejected": "Use a tension wrench."}
    # A longer conversation keeps its earlier turns in the prompt.
    assert from_csv[1]["prompt"] == "Human: Hi\n\nAssistant: Hello!\n\nHuman: Insult me."
    assert from_csv[1]["rejected"] == "You fool."
    # RL reads the prompts of the same file; a string spec naming the directory works too.
    prompts = load_dataset(str(tmp_path / "hh-saved"), kind="prompt", data_root=tmp_path / "root").records
    assert [r["prompt"] for r in prompts] == [from_csv[0]["prompt"], from_csv[1]["prompt"]]


def test_ultrafeedback_message_lists_from_parquet_and_a_saved_split(tmp_path):
    pd.DataFrame(UF).to_parquet(tmp_path / "uf.parquet")
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(UF)}).save_to_disk(str(tmp_path / "uf"))
    (rec,) = load(tmp_path, {"path": str(tmp_path / "uf.parquet")})
    assert (rec["prompt"], rec["chosen"], rec["rejected"]) == ("Name a fruit.", "An apple.", "A chair.")
    assert load(tmp_path, {"path": str(tmp_path / "uf"), "split": "train_prefs"}) == [rec]
    with pytest.raises(DataError, match=r"uf: no split 'train'; the saved DatasetDict has train_prefs"):
        load(tmp_path, {"path": str(tmp_path / "uf")})


def test_a_config_takes_mappings_and_strings_side_by_side(tmp_path):
    pd.DataFrame(HH).to_parquet(tmp_path / "hh.parquet")
    cfg = load_config(DPOConfig, overrides=[f"data.train=[{{path: {tmp_path / 'hh.parquet'}}}, embedded/pref-train:3]",
                                            "data.pairs=given"])
    assert cfg.data.train == [DataSource(path=str(tmp_path / "hh.parquet")), "embedded/pref-train:3"]
    check_spec(cfg.data.train[0], "data.train[0]")
    with pytest.raises(ConfigError, match=r"data.train\[0\].path: no such data file or directory .*missing.jsonl"):
        check_spec(DataSource(path=str(tmp_path / "missing.jsonl")), "data.train[0]")
    with pytest.raises(ConfigError, match=r"data.train\[0\]: columns.question: not a rad column; map onto one of "):
        load_config(DPOConfig, overrides=["data.train=[{path: x.jsonl, columns: {question: prompt}}]"])


def test_bad_mappings_and_rows_are_one_line_errors_naming_file_key_and_columns(tmp_path):
    (tmp_path / "pku.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PKU_RENAMED))
    with pytest.raises(DataError) as err:
        load(tmp_path, {"path": str(tmp_path / "pku.jsonl"), "columns": {**PKU_COLUMNS, "prompt": "query"}})
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "pku.jsonl"))
    assert "columns.prompt names column 'query', which the data does not have" in message
    assert "columns present: question, a, b, helpful, safer, a_safe, b_safe" in message
    broken = [HH[0], {"chosen": "no turns here", "rejected": "none either"}]
    pd.DataFrame(broken).to_parquet(tmp_path / "hh.parquet")
    with pytest.raises(DataError, match=r"hh.parquet: row 1: column 'chosen' must be a transcript with an 'Ass"):
        load(tmp_path, {"path": str(tmp_path / "hh.parquet")})
    with pytest.raises(DataError, match="is not one written by|not one written by datasets' save_to_disk"):
        load(tmp_path, {"path": str(tmp_path)})
