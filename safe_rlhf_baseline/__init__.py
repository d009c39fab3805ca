"""Safe RLHF PPO-Lagrangian baseline on rad's Ray runtime (see DESIGN.md section 3)."""
