"""Fixtures shared by the whole suite: a tiny CIFAR-10 in the official python format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_data import tiny_kwargs

from esper_env.data import CIFAR10_CLASSES

TINY_TRAIN_PER_CLASS = 12
TINY_TEST_PER_CLASS = 4


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Each class is a distinct colour plus noise, so a host can learn it in a few steps.
    palette = rng.integers(0, 256, size=(10, 3))
    noise = rng.integers(-40, 41, size=(labels.size, 32, 32, 3))
    return np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def write_tiny_cifar(root: Path, seed: int = 0) -> Path:
    """Writes `cifar-10-batches-py/` with learnable images; returns `root`."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    n_train = 10 * TINY_TRAIN_PER_CLASS
    train_labels = np.tile(np.arange(10), TINY_TRAIN_PER_CLASS)
    test_labels = np.tile(np.arange(10), TINY_TEST_PER_CLASS)
    per_batch = n_train // 5
    train_images = _images(train_labels, rng)
    for index in range(5):
        part = slice(index * per_batch, (index + 1) * per_batch)
        _dump(folder / f"data_batch_{index + 1}", train_images[part], train_labels[part])
    _dump(folder / "test_batch", _images(test_labels, rng), test_labels)
    meta = {b"label_names": [name.encode() for name in CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def _dump(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    batch = {
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
        b"labels": labels.tolist(),
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.fixture(scope="session")
def tiny_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny CIFAR-10 (12 train and 4 test images per class) in the official format."""
    return str(write_tiny_cifar(tmp_path_factory.mktemp("tiny-cifar")))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    # Test tensors are tiny, and pytest-xdist runs one worker per core: more threads
    # per worker only oversubscribe the cores.
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _cache_outside_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The decoded-data cache must never land in the developer's home during tests.
    os.environ.setdefault("ESPER_CACHE_DIR", str(tmp_path_factory.mktemp("esper-cache")))


@pytest.fixture
def tiny_env_kwargs(tiny_cifar_dir: str) -> dict[str, object]:
    """Keyword arguments that make any Esper id fast on the tiny dataset."""
    return tiny_kwargs(tiny_cifar_dir)


@pytest.fixture(scope="session")
def board_kwargs(tiny_cifar_dir: str) -> dict[str, object]:
    """The tiny kwargs with 6-epoch episodes: long enough for the heuristic to grow."""
    return {**tiny_kwargs(tiny_cifar_dir), "episode_epochs": 6}


@pytest.fixture(scope="session")
def real_cifar_dir() -> str:
    """The real CIFAR-10 through `ESPER_DATA_DIR`; skips when it is unset."""
    root = os.environ.get("ESPER_DATA_DIR")
    if not root:
        pytest.skip("ESPER_DATA_DIR is not set: real CIFAR-10 is needed (.ci/run sets it)")
    return root
