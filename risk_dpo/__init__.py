"""Offline risk-aware preference optimisation on top of ``rad``.

``token_stats`` (one forward -> per-sequence log-probs, sequential KL, sequential
risk ratio), ``losses`` (registry: dpo, tdpo1/2, ra_dpo1/2, kldpo, wdpo),
``pairs`` (helpfulness / safety / given pairs), ``trainer`` (``rad dpo`` on the
DeepSpeed learner), ``rsa`` (stepwise RSA and the RSA(P) weight average), ``cli``.
"""
