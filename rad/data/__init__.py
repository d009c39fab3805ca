"""Datasets: canonical record kinds and validation, local/hub loaders, the
`NAME[:PROPORTION]` registry, and the embedded safety world with its oracle.

Modules: `schema` (kinds, validation), `formats` (Alpaca / HarmBench mapping),
`filters` (contradiction filter), `loaders` (files and hub via `datasets`),
`registry` (specs, sub-sampling, built-in names), `template` (the Safe RLHF template),
`prompt_format` (safe_rlhf / chat / custom prompt formats, saved with each model),
`world_lexicon` / `world_oracle` / `world` (the embedded world).
"""
