"""Evaluation metrics: toy-distribution metrics and the Fréchet distance (cdrl-algorithm.md §9, §15)."""
