"""Datasets: the embedded default (scikit-learn's digits) and image folders, with a skip report."""

from game.data.dataset import Dataset, DatasetError, SkippedFile, load_dataset

__all__ = ["Dataset", "DatasetError", "SkippedFile", "load_dataset"]
