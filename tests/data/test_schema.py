"""Schema validation: messages name source, row and column; real-data scalar types are accepted."""

import numpy as np
import pytest

from rad.data.formats import project_to_prompts, to_canonical
from rad.data.schema import infer_kind, validate
from rad.errors import ConfigError, DataError


def pref_row(**overrides):
    row = {
        "prompt": "p",
        "response_0": "a",
        "response_1": "b",
        "better_response_id": 0,
        "safer_response_id": 1,
        "is_response_0_safe": True,
        "is_response_1_safe": False,
    }
    row.update(overrides)
    return row


def test_wrong_type_message_names_file_row_column_and_expectation():
    rows = [pref_row() for _ in range(17)] + [pref_row(better_response_id="yes")]
    with pytest.raises(DataError) as err:
        validate(rows, "preference", "data/x.jsonl")
    assert str(err.value) == "data/x.jsonl: row 17: column 'better_response_id' must be 0 or 1, got 'yes'"


def test_missing_column_message_lists_required_and_found():
    row = pref_row()
    del row["safer_response_id"]
    with pytest.raises(DataError) as err:
        validate([pref_row(), row], "preference", "prefs.parquet")
    msg = str(err.value)
    assert msg.startswith("prefs.parquet: row 1: required column 'safer_response_id' is missing")
    assert "found columns:" in msg and "better_response_id" in msg


def test_null_in_required_column_is_reported():
    with pytest.raises(DataError, match=r"row 0: required column 'prompt' has no value"):
        validate([pref_row(prompt=None)], "preference", "f.jsonl")


@pytest.mark.parametrize(
    "column,value,phrase",
    [
        ("is_response_0_safe", "true", "must be a boolean"),
        ("is_response_0_safe", 2, "must be a boolean"),
        ("safer_response_id", 2, "must be 0 or 1"),
        ("prompt", 3, "must be a string"),
        ("response_0_severity_level", -1, "must be an integer >= 0"),
        ("response_0_harm_category", 5, "must be a dict"),
    ],
)
def test_each_type_rejects_wrong_values(column, value, phrase):
    with pytest.raises(DataError, match=rf"f: row 0: column '{column}' {phrase}"):
        validate([pref_row(**{column: value})], "preference", "f")


def test_numpy_scalars_and_int_bools_are_normalised_to_python_types():
    row = pref_row(
        prompt=np.str_("p"),
        better_response_id=np.int64(1),
        safer_response_id=1.0,
        is_response_0_safe=np.bool_(False),
        is_response_1_safe=1,
        response_0_severity_level=np.int32(2),
        response_0_harm_category={"violence": np.bool_(True)},
        hidden_truth=0.5,
    )
    (out,) = validate([row], "preference", "f")
    assert out["better_response_id"] == 1 and type(out["better_response_id"]) is int
    assert out["safer_response_id"] == 1 and type(out["safer_response_id"]) is int
    assert out["is_response_0_safe"] is False and out["is_response_1_safe"] is True
    assert type(out["response_0_severity_level"]) is int
    assert out["response_0_harm_category"] == {"violence": True}
    assert type(out["response_0_harm_category"]["violence"]) is bool
    assert out["hidden_truth"] == 0.5  # extra columns kept


def test_optional_nan_becomes_none_and_input_is_not_modified():
    row = pref_row(response_0_severity_level=float("nan"))
    (out,) = validate([row], "preference", "f")
    assert out["response_0_severity_level"] is None
    assert row["response_0_severity_level"] != row["response_0_severity_level"]  # still NaN


def test_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="known kinds: preference"):
        validate([], "nonsense", "f")


@pytest.mark.parametrize(
    "columns,kind",
    [
        (["prompt", "response_0", "response_1", "better_response_id"], "preference"),
        (["prompt", "chosen", "rejected"], "pairs"),
        (["Behavior", "BehaviorID"], "redteam"),
        (["instruction", "input", "output"], "sft"),
        (["prompt", "response", "is_safe", "category"], "labelled"),
        (["prompt", "response"], "sft"),
        (["prompt"], "prompt"),
        (["text"], None),
    ],
)
def test_infer_kind(columns, kind):
    assert infer_kind(columns) == kind


def test_alpaca_maps_to_prompt_response_like_safe_rlhf():
    rows = [
        {"instruction": "Add numbers.", "input": "2 and 3", "output": "5", "text": "t"},
        {"instruction": "Say hi.", "input": "", "output": "hi", "text": "t"},
    ]
    out = to_canonical(rows, "sft", "alpaca.json")
    assert out[0] == {"prompt": "Add numbers. 2 and 3", "response": "5", "text": "t"}
    assert out[1]["prompt"] == "Say hi."


def test_alpaca_missing_output_names_the_format():
    with pytest.raises(DataError, match=r"a.json: row 0: required column 'output' is missing.*Alpaca"):
        to_canonical([{"instruction": "x", "input": ""}], "sft", "a.json")


def test_harmbench_contextual_prompt_and_renames():
    rows = [
        {"Behavior": "Do X", "FunctionalCategory": "standard", "SemanticCategory": "illegal",
         "Tags": None, "ContextString": None, "BehaviorID": "x1"},
        {"Behavior": "Summarise", "FunctionalCategory": "contextual", "SemanticCategory": "misinformation",
         "Tags": "context", "ContextString": "Some text", "BehaviorID": "x2"},
    ]
    a, b = to_canonical(rows, "redteam", "hb.csv")
    assert a["prompt"] == "Do X" and a["category"] == "illegal" and a["id"] == "x1" and a["context"] is None
    assert b["prompt"] == "Some text\n\n---\n\nSummarise" and b["tags"] == "context"
    assert b["functional_category"] == "contextual"


def test_project_to_prompts_dedupes_in_order():
    rows = validate([pref_row(prompt="a"), pref_row(prompt="b"), pref_row(prompt="a")], "preference", "f")
    assert [r["prompt"] for r in project_to_prompts(rows, "f")] == ["a", "b"]
