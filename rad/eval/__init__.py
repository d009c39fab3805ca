"""Evaluation arena: blue vs red models on the same prompts, spectral-risk tables, OOD judges, report.

Modules: ``config`` (``EvalConfig``), ``responses`` (cached generation + scoring),
``arena`` (pairwise metrics), ``judges`` (the red-team judges: cost model, pairwise chat endpoint, Llama
Guard-style and HarmBench-style classifiers, StrongREJECT rubric),
``plots``, ``report`` (Markdown / HTML), ``run`` (``run_eval``), ``cli`` (``rad eval``).
"""

from rad.eval.config import EvalConfig, JudgeConfig
from rad.eval.run import run_eval

__all__ = ["EvalConfig", "JudgeConfig", "run_eval"]
