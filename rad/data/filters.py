"""Skip preference rows whose labels contradict each other or carry no signal.

Safe RLHF's cost-model loss uses both the ranking (`safer_response_id`) and the
per-response safety signs; a row whose safer response is labelled unsafe while
the other one is labelled safe gives the two terms opposite targets, so it is
dropped. Rows with two identical responses (after stripping whitespace) cannot
teach a ranking and are dropped too. Skipped rows are counted and logged, never
raised as errors.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

logger = logging.getLogger("rad.data")

SAFER_UNSAFE_OTHER_SAFE = "safer_unsafe_other_safe"
IDENTICAL_RESPONSES = "identical_responses"


def skip_reason(record: dict[str, Any]) -> str | None:
    """The reason a canonical preference record is skipped, or None to keep it."""
    if record["response_0"].strip() == record["response_1"].strip():
        return IDENTICAL_RESPONSES
    safer = record["safer_response_id"]
    safer_safe = record[f"is_response_{safer}_safe"]
    other_safe = record[f"is_response_{1 - safer}_safe"]
    if not safer_safe and other_safe:
        return SAFER_UNSAFE_OTHER_SAFE
    return None


def describe_skipped(skipped: Counter[str]) -> str:
    """``reason=count, ...`` in a stable order."""
    return ", ".join(f"{reason}={n}" for reason, n in sorted(skipped.items()))


def kept_preference_rows(
    records: list[dict[str, Any]], source: str = "preference data"
) -> tuple[list[int], Counter[str]]:
    """(indices of the records kept, Counter of skip reasons); logs the counts to `rad.data`."""
    kept: list[int] = []
    skipped: Counter[str] = Counter()
    for row, record in enumerate(records):
        reason = skip_reason(record)
        if reason is None:
            kept.append(row)
        else:
            skipped[reason] += 1
    if skipped:
        logger.info("%s: kept %d of %d preference rows; skipped %s", source, len(kept), len(records),
                    describe_skipped(skipped))
    else:
        logger.info("%s: kept all %d preference rows", source, len(records))
    return kept, skipped


def filter_preferences(
    records: list[dict[str, Any]], source: str = "preference data"
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Return (kept records, Counter of skip reasons); logs the counts to `rad.data`."""
    kept, skipped = kept_preference_rows(records, source)
    return [records[i] for i in kept], skipped
