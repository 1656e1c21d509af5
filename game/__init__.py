"""Latent Reach: stand inside a neural network's feature space and reshape it by hand."""

__version__ = "0.1.0"
