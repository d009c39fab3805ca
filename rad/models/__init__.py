"""Causal-LM and tokenizer loading/saving (loading.py) and the tiny local model builder (tiny.py)."""
