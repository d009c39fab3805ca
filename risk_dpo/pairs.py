"""Preference pairs ``(prompt, chosen, rejected)`` from the registry's records.

The same PKU-SafeRLHF-schema preference rows give two pair sets:

* ``helpfulness``: chosen = ``response_{better_response_id}`` (RSA stage 1);
* ``safety``:      chosen = ``response_{safer_response_id}``  (RSA stage 2, Ra-DPO on safety);

and ``given`` reads the plain ``prompt, chosen, rejected`` format (kind ``pairs``).
Pairs whose two responses are the same text carry no preference signal and
are skipped (and counted).
"""

from __future__ import annotations

import logging
from typing import Any

from rad.algos.assets import load_records
from rad.data.sources import DataSpecs
from rad.errors import ConfigError
from rad.settings import WorldConfig

log = logging.getLogger("risk_dpo")

PAIR_KINDS = ("helpfulness", "safety", "given")
_CHOSEN_ID = {"helpfulness": "better_response_id", "safety": "safer_response_id"}


def pairs_from_preferences(records: list[dict[str, Any]], pairs: str) -> tuple[list[dict[str, str]], int]:
    """``(pairs, skipped)`` from preference records, chosen by helpfulness or safety."""
    if pairs not in _CHOSEN_ID:
        raise ConfigError(f"data.pairs: {pairs!r} does not apply to preference rows; "
                          f"choose one of {sorted(_CHOSEN_ID)}")
    key = _CHOSEN_ID[pairs]
    out, skipped = [], 0
    for rec in records:
        w = int(rec[key])
        chosen, rejected = rec[f"response_{w}"], rec[f"response_{1 - w}"]
        if chosen.strip() == rejected.strip():
            skipped += 1
            continue
        out.append({"prompt": rec["prompt"], "chosen": chosen, "rejected": rejected})
    return out, skipped


def load_pairs(specs: DataSpecs, pairs: str, world: WorldConfig, seed: int) -> tuple[list[dict[str, str]], int]:
    """Pairs of dataset ``specs`` as ``data.pairs`` asks; returns ``(pairs, skipped)``."""
    if pairs not in PAIR_KINDS:
        raise ConfigError(f"data.pairs: {pairs!r} is not one of {list(PAIR_KINDS)}")
    if not specs:
        return [], 0
    if pairs == "given":
        records = load_records(specs, "pairs", world, seed)
        out = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in records
               if r["chosen"].strip() != r["rejected"].strip()]
        skipped = len(records) - len(out)
    else:
        out, skipped = pairs_from_preferences(load_records(specs, "preference", world, seed), pairs)
    if skipped:
        log.warning("%s: skipped %d pairs whose chosen and rejected responses are identical", specs, skipped)
    return out, skipped
