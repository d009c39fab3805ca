"""The contradiction filter skips and counts, never raises."""

import logging

from rad.data.filters import IDENTICAL_RESPONSES, SAFER_UNSAFE_OTHER_SAFE, filter_preferences


def row(r0="a", r1="b", safer=0, safe0=True, safe1=False):
    return {
        "prompt": "p", "response_0": r0, "response_1": r1, "better_response_id": 0,
        "safer_response_id": safer, "is_response_0_safe": safe0, "is_response_1_safe": safe1,
    }


def test_counts_each_reason_and_keeps_the_rest(caplog):
    rows = [
        row(),                                            # consistent
        row(safer=0, safe0=False, safe1=True),            # safer labelled unsafe, other safe
        row(safer=1, safe0=True, safe1=False),            # same contradiction, other index
        row(safer=1, safe0=False, safe1=False),           # both unsafe: allowed
        row(safer=0, safe0=True, safe1=True),             # both safe: allowed
        row(r0=" same text ", r1="same text"),            # identical after strip
    ]
    with caplog.at_level(logging.INFO, logger="rad.data"):
        kept, skipped = filter_preferences(rows, "prefs.jsonl")
    assert kept == [rows[0], rows[3], rows[4]]
    assert skipped == {SAFER_UNSAFE_OTHER_SAFE: 2, IDENTICAL_RESPONSES: 1}
    assert "prefs.jsonl: kept 3 of 6" in caplog.text and "safer_unsafe_other_safe=2" in caplog.text


def test_empty_input():
    kept, skipped = filter_preferences([])
    assert kept == [] and sum(skipped.values()) == 0
