"""Map external dataset formats onto the canonical record kinds of `rad.data.schema`.

Source formats recognised (by their columns):
- PKU-SafeRLHF preference rows and BeaverTails labelled rows are already canonical.
- Alpaca (`instruction, input, output`) -> `sft` (`prompt, response`). The prompt is
  `instruction + " " + input` as in Safe RLHF's Alpaca loader (input omitted when empty).
- HarmBench behaviours CSV (`Behavior, FunctionalCategory, SemanticCategory, Tags,
  ContextString, BehaviorID`) -> `redteam` (`prompt, category, id, context`). A
  contextual behaviour's prompt is `context + "\\n\\n---\\n\\n" + behavior`, the way
  HarmBench presents it to models.

Conversation layouts are flattened first (:func:`flatten_conversations`), for any kind:
- HH-RLHF transcripts: rows without a `prompt` whose response columns (`chosen`, `rejected`, `response`,
  `response_0`, `response_1`) hold whole conversations ("\n\nHuman: ... \n\nAssistant: ..."). Each
  response is the text after the last "Assistant:"; the prompt is the conversation before it, which the
  responses of a row must share. A one-turn prompt loses its "Human:" marker; a longer one stays a transcript.
- Chat messages (UltraFeedback-style rows, e.g. HuggingFaceH4/ultrafeedback_binarized): a response column
  holding a list of `{role, content}` messages gives the content of its last message, which must be the
  assistant's; a row without `prompt` takes the last user message before it.

Any kind with a `prompt` column can also be projected onto the `prompt` kind
(`project_to_prompts`), which is how RL reads its prompts from a preference set.
"""

from __future__ import annotations

from typing import Any

from rad.data.schema import Column, check_columns, validate
from rad.errors import ConfigError, DataError

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


RESPONSE_COLUMNS = ("chosen", "rejected", "response", "response_0", "response_1")
_ASSISTANT, _HUMAN = "Assistant:", "Human:"


def _is_messages(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _last_turn(messages: Any, source: str, row: int, column: str) -> tuple[str | None, str]:
    """(the last user message before the reply or None, the reply) of a message list."""
    if not _is_messages(messages) or messages[-1]["role"] != "assistant":
        raise DataError(f"{source}: row {row}: column {column!r} must be a list of {{role, content}} messages "
                        f"ending with the assistant's, got {str(messages)[:60]!r}")
    users = [m["content"] for m in messages[:-1] if m["role"] == "user"]
    return (users[-1] if users else None), str(messages[-1]["content"])


def _split_transcript(text: Any, source: str, row: int, column: str) -> tuple[str, str]:
    """(the conversation before the last "Assistant:", the reply after it)."""
    cut = text.rfind(_ASSISTANT) if isinstance(text, str) else -1
    if cut < 0:
        raise DataError(f"{source}: row {row}: column {column!r} must be a transcript with an "
                        f"'{_ASSISTANT}' turn (HH-RLHF layout; or map a prompt column), got {str(text)[:60]!r}")
    return text[:cut].strip(), text[cut + len(_ASSISTANT):].strip()


def _transcript_prompt(conversation: str) -> str:
    one_turn = conversation.startswith(_HUMAN) and conversation.count(_HUMAN) == 1 and _ASSISTANT not in conversation
    return conversation[len(_HUMAN):].strip() if one_turn else conversation


def flatten_conversations(records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Records with transcript or message-list responses turned into `prompt` and plain responses (see the
    module docstring); others unchanged."""
    targets = [c for c in RESPONSE_COLUMNS if c in _columns(records)]
    if not targets:
        return records
    first = records[0]
    messages = any(_is_messages(first[c]) for c in targets)
    transcripts = ("prompt" not in first and not messages
                   and any(isinstance(first[c], str) and _ASSISTANT in first[c] for c in targets))
    if not (messages or transcripts):
        return records
    out = []
    for row, rec in enumerate(records):
        split = _last_turn if messages else _split_transcript
        turns = {c: split(rec[c], source, row, c) for c in targets}
        new = {**rec, **{c: reply for c, (_, reply) in turns.items()}}
        contexts = {context for context, _ in turns.values()}
        if "prompt" not in rec:
            if len(contexts) != 1 or None in contexts:
                raise DataError(f"{source}: row {row}: columns {', '.join(targets)} do not share the conversation "
                                f"before their last reply, so it cannot be the prompt; map a prompt column")
            context = contexts.pop()
            new["prompt"] = context if messages else _transcript_prompt(context)
        out.append(new)
    return out


def to_canonical(records: list[dict[str, Any]], kind: str, source: str) -> list[dict[str, Any]]:
    """Detect the source format of `records`, map it onto `kind`, validate and return."""
    records = flatten_conversations(records, source)
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
