"""Integration on the real CIFAR-10 copy (skipped where it is absent, required in CI)."""

from __future__ import annotations

import numpy as np
import pytest

import cifarlab

pytestmark = pytest.mark.real_data


def test_the_shared_copy_has_50k_train_10k_test_in_10_balanced_classes(real_data):
    data = cifarlab.load_dataset(real_data, val_size=5000)
    assert len(data.train) + len(data.val) == 50_000 and len(data.test) == 10_000
    assert data.classes == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
    assert np.bincount(data.val.labels).tolist() == [500] * 10
    assert np.bincount(data.test.labels).tolist() == [1000] * 10
    assert data.train.images.shape[1:] == (32, 32, 3)


def test_tutorial_net_learns_well_above_chance(real_data, tmp_path):
    """The issue's bar: Adam, lr 0.001, batch 64, 2 epochs, 10k images -> test >= 35%."""
    result = cifarlab.train(
        model="tutorial", optimizer="adam", lr=0.001, batch_size=64, epochs=2,
        limit_train=10_000, data=str(real_data), workspace=str(tmp_path), quiet=True,
    )  # fmt: skip
    assert result.status == "completed"
    assert result.summary["final_test_acc"] >= 0.35, result.summary
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    (record,) = cifarlab.results(tmp_path)
    assert record["status"] == "completed" and record["test_acc"] == result.summary["test_acc"]
