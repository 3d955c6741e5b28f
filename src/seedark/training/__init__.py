"""Evaluation and training like the paper: data, noise, metrics, the training loop."""
