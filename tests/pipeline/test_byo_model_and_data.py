"""``rad train`` with an instruct-style model (a chat template) on data given by path and column mapping:
the prompt format is set once, every stage's model is saved with it, and the data needs no Python."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rad.config import load_config
from rad.data.prompt_format import saved_prompt_format, use_prompt_format
from rad.models.loading import load_causal_lm, load_tokenizer, save_pretrained_atomic
from rad.models.score_model import read_score_config
from rad.pipeline import PipelineConfig, run_pipeline

pytestmark = pytest.mark.slow

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_sft_and_reward_stages_with_a_chat_model_and_mapped_files(tmp_path, tiny_model_dir, world_dir):
    # An "instruct model": the tiny model whose tokenizer ships a chat template (and records no rad format).
    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.init_kwargs.pop("rad_prompt_format")
    base = save_pretrained_atomic(load_causal_lm(tiny_model_dir, tokenizer=tokenizer), tokenizer, tmp_path / "base")
    assert "rad_prompt_format" not in json.loads((base / "tokenizer_config.json").read_text())
    # HH-RLHF-shaped transcripts for SFT (the chosen reply is the response), and the embedded world's
    # preference rows under other column names for the reward model.
    sft_rows = pd.read_json(world_dir / "sft-train.jsonl", lines=True).head(48)
    hh = [{"chosen": f"\n\nHuman: {r.prompt}\n\nAssistant: {r.response}",
           "rejected": f"\n\nHuman: {r.prompt}\n\nAssistant: no."} for r in sft_rows.itertuples()]
    pd.DataFrame(hh).to_parquet(tmp_path / "hh.parquet")
    prefs = pd.read_json(world_dir / "pref-train.jsonl", lines=True).head(64)
    prefs.rename(columns={"prompt": "question", "response_0": "a", "response_1": "b"}).to_json(
        tmp_path / "prefs.jsonl", orient="records", lines=True)
    hh_source = {"path": str(tmp_path / "hh.parquet"), "kind": "sft", "columns": {"response": "chosen"}}
    pref_source = {"path": str(tmp_path / "prefs.jsonl"),
                   "columns": {"prompt": "question", "response_0": "a", "response_1": "b"}}
    cfg = load_config(PipelineConfig, None, [
        f"output_dir={tmp_path / 'run'}", "stages=[sft, reward]", f"model.name_or_path={base}",
        "model.prompt_format=chat", "logging.tensorboard=false", "logging.progress=false",
        f"sft.data.train={json.dumps([hh_source])}", f"sft.data.eval={json.dumps([{**hh_source, 'sample': 4}])}",
        "sft.num_samples=1", "sft.schedule.epochs=1",
        f"reward.data.train={json.dumps([pref_source])}", "reward.data.eval=[]", "reward.schedule.epochs=1"])
    summary = run_pipeline(cfg)
    assert set(summary["stages"]) == {"sft", "reward"}
    run = tmp_path / "run"
    assert saved_prompt_format(run / "sft" / "model") == "chat"
    assert saved_prompt_format(run / "reward" / "model") == "chat"
    assert read_score_config(run / "reward" / "model").template == "chat"
    # The held-out prompts are the transcripts' prompts; the SFT model answered them.
    sample = json.loads((run / "sft" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["prompt"] in sft_rows["prompt"].tolist() and "greedy" in sample
    sft_tokenizer = load_tokenizer(run / "sft" / "model")
    assert use_prompt_format(sft_tokenizer).text(sft_tokenizer, "hi") == "<|user|>hi<|assistant|>"
    # A rerun reads the mappings back from the recorded config as the same values: nothing to redo, no drift.
    assert run_pipeline(load_config(PipelineConfig, run / "config.yaml"))["stages"].keys() == {"sft", "reward"}
