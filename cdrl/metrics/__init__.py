"""Evaluation metrics: toy-distribution metrics, the Fréchet distance and its feature extractors (§9, §15)."""
