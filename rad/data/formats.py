"""Map external dataset formats onto the canonical record kinds of `rad.data.schema`.

Source formats recognised (by their columns):
- PKU-SafeRLHF preference rows and BeaverTails labelled rows are already canonical.
- Alpaca (`instruction, input, output`) -> `sft` (`prompt, response`). The prompt is
  `instruction + " " + input` as in Safe RLHF's Alpaca loader (input omitted when empty).
- HarmBench behaviours CSV (`Behavior, FunctionalCategory, SemanticCategory, Tags,
  ContextString, BehaviorID`) -> `redteam` (`prompt, category, id, context`). A
  contextual behaviour's prompt is `context + "\\n\\n---\\n\\n" + behavior`, the way
  HarmBench presents it to models.

Any kind with a `prompt` column can also be projected onto the `prompt` kind
(`project_to_prompts`), which is how RL reads its prompts from a preference set.
"""

from __future__ import annotations

from typing import Any

from rad.data.schema import Column, check_columns, validate
from rad.errors import ConfigError

_ALPACA = (Column("instruction", "str"), Column("input", "str", False), Column("output", "str"))
_HARMBENCH = (
    Column("Behavior", "str"),
    Column("FunctionalCategory", "str", False),
    Column("SemanticCategory", "str", False),
    Column("Tags", "str", False),
    Column("ContextString", "str", False),
    Column("BehaviorID", "str", False),
)
_HARMBENCH_RENAMES = {"FunctionalCategory": "functional_category", "Tags": "tags"}


def _columns(records: list[dict[str, Any]]) -> set[str]:
    return set(records[0]) if records else set()


def _from_alpaca(records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    checked = check_columns(records, _ALPACA, source, "the Alpaca format")
    out = []
    for rec in checked:
        rest = {k: v for k, v in rec.items() if k not in ("instruction", "input", "output")}
        prompt = " ".join(p for p in (rec["instruction"].strip(), (rec.get("input") or "").strip()) if p)
        out.append({"prompt": prompt, "response": rec["output"], **rest})
    return out


def _from_harmbench(records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    checked = check_columns(records, _HARMBENCH, source, "the HarmBench format")
    out = []
    for rec in checked:
        behavior = rec["Behavior"].strip()
        context = (rec.get("ContextString") or "").strip()
        new: dict[str, Any] = {
            "prompt": f"{context}\n\n---\n\n{behavior}" if context else behavior,
            "category": rec.get("SemanticCategory"),
            "id": rec.get("BehaviorID"),
            "context": context or None,
        }
        for key, value in rec.items():
            if key in _HARMBENCH_RENAMES:
                new[_HARMBENCH_RENAMES[key]] = value
            elif key not in {c.name for c in _HARMBENCH}:
                new[key] = value
        out.append(new)
    return out


def to_canonical(records: list[dict[str, Any]], kind: str, source: str) -> list[dict[str, Any]]:
    """Detect the source format of `records`, map it onto `kind`, validate and return."""
    cols = _columns(records)
    if kind == "sft" and "instruction" in cols:
        records = _from_alpaca(records, source)
    elif kind == "redteam" and "Behavior" in cols:
        records = _from_harmbench(records, source)
    return validate(records, kind, source)


def project_to_prompts(records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Reduce canonical records of any kind to unique `prompt` records.

    Keeps `prompt` and, when present, `category` and `id`. Duplicated prompts are
    dropped (first occurrence kept), as Safe RLHF's prompt-only dataset does, so a
    preference set with many pairs per prompt does not over-weight those prompts.
    """
    out = [{k: records[i][k] for k in ("prompt", "category", "id") if k in records[i]}
           for i in first_prompt_rows(records, source)]
    return validate(out, "prompt", source)


def first_prompt_rows(records: list[dict[str, Any]], source: str) -> list[int]:
    """Indices of the first record of every distinct prompt (what :func:`project_to_prompts` keeps)."""
    if records and "prompt" not in records[0]:
        raise ConfigError(f"{source}: records have no 'prompt' column to project onto kind 'prompt'")
    first: dict[str, int] = {}
    for i, rec in enumerate(records):
        first.setdefault(rec["prompt"], i)
    return sorted(first.values())
