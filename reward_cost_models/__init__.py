"""Reward and cost models: Safe RLHF's score-model recipe on any ``transformers`` backbone.

- :mod:`reward_cost_models.losses`  pairwise reward loss, pairwise + sign cost loss, accuracies
- :mod:`reward_cost_models.config`  ``ScoreModelConfig`` (``rad rm train`` / ``rad cm train``)
- :mod:`reward_cost_models.train`   ``ScoreModelTrainer`` (DeepSpeed learner) and ``run_score_model``
- :mod:`reward_cost_models.report`  held-out accuracy, sign accuracy, Spearman, score histogram
- :mod:`reward_cost_models.cli`     ``add_cli(subparsers)`` for the ``rad`` command

The model itself (:mod:`rad.models.score_model`) and the batched scorer
(:mod:`rad.runtime.scorer`) live in ``rad`` because the RL stages need them.
"""
