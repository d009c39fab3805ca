"""rad: Risk-sensitive Alignment via Dominance."""

__version__ = "0.1.0"
