"""Env kwargs for the tiny CIFAR-10 of `conftest.py`: importable by name from any test module
(`from conftest import ...` resolves to whichever conftest pytest loaded first)."""

from __future__ import annotations


def tiny_kwargs(tiny_cifar_dir: str) -> dict[str, object]:
    """Keyword arguments that make any Esper id fast on the tiny dataset."""
    return {
        "data_dir": tiny_cifar_dir,
        "train_per_class": 8,
        "val_per_class": 4,
        "test_per_class": 4,
        "episode_epochs": 4,
        "train": {"batch_size": 16, "eval_batch_size": 64},
        "lifecycle": {"min_training_epochs": 0, "holding_epochs": 0, "embargo_epochs": 1},
    }
