"""Safe RLHF PPO-Lagrangian baseline on rad's Ray runtime (see docs/math.md section 5)."""
