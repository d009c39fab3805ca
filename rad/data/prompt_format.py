"""Prompt formats: how a raw user prompt becomes the text (and tokens) a model sees.

Three formats, named by one config value (``model.prompt_format`` / ``policy.prompt_format``):

* ``safe_rlhf`` - the Safe RLHF template (:data:`rad.data.template.PROMPT_TEMPLATE`), the default, for
  base models; tokenized with the tokenizer's special tokens (e.g. BOS), the response follows after a space;
* ``chat`` - the tokenizer's own chat template (``apply_chat_template`` of one user message with
  ``add_generation_prompt=True``), for instruct models; the rendered text already holds the template's
  special tokens, so it is tokenized without adding more, and the response follows directly;
* any other string - a custom template holding ``{prompt}`` exactly once (other braces doubled, as in
  ``str.format``), used like ``safe_rlhf``.

A model's format is saved with it: the key ``rad_prompt_format`` of its ``tokenizer_config.json``
(:data:`TOKENIZER_KEY`), written whenever a stage saves the tokenizer next to the weights. A stage that
reads a model uses that saved format unless its config names another (:func:`use_prompt_format`), so SFT,
the score models, the RL rollouts, DPO and evaluation build the same input for the same model. Score
models also record their format in ``score_config.json`` (``template``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rad.data.template import PROMPT_TEMPLATE
from rad.errors import ConfigError

log = logging.getLogger("rad.data")

SAFE_RLHF = "safe_rlhf"
CHAT = "chat"
#: The ``tokenizer_config.json`` key that records a model's prompt format.
TOKENIZER_KEY = "rad_prompt_format"

HELP = ("prompt format: 'safe_rlhf' (the Safe RLHF template, for base models), 'chat' (the tokenizer's chat "
        "template, for instruct models) or a custom template string with {prompt}; '' = the format saved with "
        "the model (tokenizer_config.json: rad_prompt_format), else safe_rlhf")


@dataclass(frozen=True)
class PromptFormat:
    """One prompt format (see the module docstring); build it with :meth:`parse`."""

    spec: str = SAFE_RLHF

    @classmethod
    def parse(cls, spec: str, key: str = "prompt_format") -> "PromptFormat":
        """The format ``spec`` names; :class:`ConfigError` naming ``key`` for a template without one ``{prompt}``."""
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f"{key}: expected 'safe_rlhf', 'chat' or a template string with {{prompt}}, got {spec!r}")
        if spec in (SAFE_RLHF, CHAT):
            return cls(spec)
        if spec == PROMPT_TEMPLATE:  # score models saved before formats had names record the template itself
            return cls(SAFE_RLHF)
        try:
            probe = spec.format(prompt="\x00")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"{key}: custom template {spec!r} may use only the field {{prompt}} (double other "
                              f"braces: {{{{ }}}}); it has {type(exc).__name__}: {exc}") from None
        if probe.count("\x00") != 1:
            raise ConfigError(f"{key}: custom template {spec!r} must hold {{prompt}} exactly once "
                              f"(or use 'safe_rlhf' or 'chat')")
        return cls(spec)

    @property
    def is_chat(self) -> bool:
        return self.spec == CHAT

    @property
    def template(self) -> str:
        """The ``str.format`` template of a non-chat format."""
        return PROMPT_TEMPLATE if self.spec == SAFE_RLHF else self.spec

    def check(self, tokenizer, where: str = "tokenizer") -> None:
        """:class:`ConfigError` if the chat format meets a tokenizer without a chat template."""
        if self.is_chat and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"prompt format 'chat': {where} {getattr(tokenizer, 'name_or_path', '')!r} has no "
                              f"chat template; use 'safe_rlhf' or a custom template string with {{prompt}}")

    def text(self, tokenizer, prompt: str) -> str:
        """The model input of ``prompt`` as text (the prompt stripped of surrounding whitespace)."""
        if self.is_chat:
            self.check(tokenizer)
            try:
                return tokenizer.apply_chat_template([{"role": "user", "content": prompt.strip()}], tokenize=False,
                                                     add_generation_prompt=True)
            except Exception as exc:  # jinja2's TemplateError, or raise_exception() inside the template
                raise ConfigError(f"prompt format 'chat': the chat template of {tokenizer.name_or_path!r} fails on one "
                                  f"user message ({type(exc).__name__}: {exc}); use 'safe_rlhf' or a custom "
                                  f"template string with {{prompt}}") from None
        return self.template.format(prompt=prompt.strip())

    def ids(self, tokenizer, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of every prompt's model input (one tokenizer call)."""
        texts = [self.text(tokenizer, p) for p in prompts]
        # A chat template writes its special tokens (BOS included) into the text itself.
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=not self.is_chat)["input_ids"]]

    def response_text(self, response: str) -> str:
        """The text that follows the prompt: the stripped response, after a space unless the format is chat."""
        return response.strip() if self.is_chat else " " + response.strip()


def tokenizer_prompt_format(tokenizer) -> PromptFormat:
    """The format saved with ``tokenizer`` (``rad_prompt_format`` of its config), else ``safe_rlhf``."""
    saved = getattr(tokenizer, "init_kwargs", {}).get(TOKENIZER_KEY)
    where = f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}/tokenizer_config.json: {TOKENIZER_KEY}"
    return PromptFormat.parse(saved, where) if saved else PromptFormat()


def saved_prompt_format(model_dir: str | Path) -> str:
    """The format spec saved in ``model_dir``'s ``tokenizer_config.json`` (read as JSON, no tokenizer loaded),
    ``safe_rlhf`` when it records none."""
    file = Path(model_dir) / "tokenizer_config.json"
    saved = json.loads(file.read_text()).get(TOKENIZER_KEY) if file.is_file() else None
    return PromptFormat.parse(saved, f"{file}: {TOKENIZER_KEY}").spec if saved else SAFE_RLHF


def use_prompt_format(tokenizer, spec: str = "", key: str = "prompt_format") -> PromptFormat:
    """Give ``tokenizer`` the format ``spec`` (``''`` = keep its saved one) and return it.

    The format is recorded in the tokenizer's config, so ``save_pretrained`` writes it next to the weights.
    A change from the saved format is logged.
    """
    saved = tokenizer_prompt_format(tokenizer)
    fmt = PromptFormat.parse(spec, key) if spec else saved
    fmt.check(tokenizer, f"{key}: tokenizer")
    if fmt != saved and TOKENIZER_KEY in tokenizer.init_kwargs:
        log.warning("%s: prompt format %r replaces the format %r saved with %s", key, fmt.spec, saved.spec,
                    getattr(tokenizer, "name_or_path", "the tokenizer"))
    tokenizer.init_kwargs[TOKENIZER_KEY] = fmt.spec
    return fmt


def warn_on_mismatch(policy: str, scorers: dict[str, str], name: str = "policy") -> list[str]:
    """Log (and return) one line per scorer whose format differs from the policy's (format specs by scorer name).

    Each model reads its input in its own format, so a mismatch still scores what the policy said; it is worth a
    look because the scorer then sees the prompt differently from how it was trained."""
    lines = [f"prompt formats differ: {name} generates with {policy!r}, the {scorer} model scores with {spec!r}"
             for scorer, spec in scorers.items()
             if PromptFormat.parse(spec, scorer) != PromptFormat.parse(policy, name)]
    for line in lines:
        log.warning(line)
    return lines
