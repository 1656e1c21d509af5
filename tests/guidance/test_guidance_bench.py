"""The simulated-user benchmark's helpers and its bad-input exit code (the full run is a benchmark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_edits.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_edits", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_subset_classes_renumbers(loaded_digits):
    bench = _bench()
    data = bench.subset_classes(loaded_digits.dataset, "3,7")
    assert data.class_names == ["3", "7"]
    assert set(np.unique(data.labels)) == {0, 1}
    original = loaded_digits.dataset
    assert len(data.labels) == int(np.isin(original.labels, [3, 7]).sum())
    assert data.sources[0] == original.sources[int(np.flatnonzero(np.isin(original.labels, [3, 7]))[0])]


def test_bad_classes_exit_code_2(capsys):
    assert _bench().main(["--classes", "3,nope", "--max-edits", "1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert _bench().main(["--classes", "3", "--max-edits", "1"]) == 2


def test_measured_accuracy_pools_the_extra_evaluation_cards():
    """bench_suite's ``--eval-extra``: the extra images count with the held-out cards; training
    cards never count."""

    class Predicts:
        def __init__(self, classes):
            self.classes = np.asarray(classes)

        def infer(self, images, batch_size=256):
            return type("Inference", (), {"top5_classes": self.classes[:, None]})()

    scene = type("Scene", (), {"network": type("Net", (), {"batch_size": 256})()})()
    base = {"truth": np.array([0, 1, 1, 0]), "is_train": np.array([True, True, False, False]), "scene": scene}
    predictions = np.array([1, 0, 1, 1])  # training cards wrong (not counted); held-out 1 of 2
    bench = _bench()
    assert bench.measured_accuracy(base, predictions, None) == 0.5
    base["extra"] = (np.zeros((3, 2, 2, 3), np.uint8), np.array([2, 2, 0]))
    assert bench.measured_accuracy(base, predictions, Predicts([2, 2, 2])) == 3 / 5
