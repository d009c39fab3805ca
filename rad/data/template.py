"""The Safe RLHF prompt template shared by every stage (SFT, scoring, RL, eval).

Models with a chat template may use that instead (a model-layer decision); the
plain template keeps the tiny CPU models and the reference datasets compatible.
"""

PROMPT_TEMPLATE = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"


def format_prompt(prompt: str, template: str = PROMPT_TEMPLATE) -> str:
    """Wrap a raw user prompt in the conversation template.

    Leading/trailing whitespace of the prompt is stripped so that prompts read
    from different files produce identical model inputs.
    """
    return template.format(prompt=prompt.strip())
