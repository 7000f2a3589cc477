"""CIFAR-10 loading and on-device batches (Tolaria's data feed).

Loading looks, in order, for a decoded ``.npz`` cache, the official python
release (``cifar-10-batches-py``), an image-folder layout or a ``.tar.gz`` of
either, and finally downloads the official archive. Batches come from one uint8
tensor kept on the training device; normalisation, random crop and flip are
batched tensor ops driven by a CPU ``torch.Generator``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import io
import logging
import os
import pickle
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

IMAGE_SHAPE: tuple[int, int, int] = (32, 32, 3)
CROP_PADDING = 4


def _check_split(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` unless ``images``/``labels`` form a uint8 NHWC split."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{what}: images must be uint8 N x 32 x 32 x 3 (NHWC), "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{what}: labels must be 1-D with one label per image, "
            f"got shape {tuple(labels.shape)} for {images.shape[0]} images"
        )
    if labels.dtype != np.int64:
        raise ValueError(f"{what}: labels must be int64, got {labels.dtype}")


def stratified_subset(
    images: np.ndarray, labels: np.ndarray, per_class: int, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Take the first ``per_class`` images of every class after skipping ``offset`` of each.

    Args:
        images: uint8 N x 32 x 32 x 3.
        labels: int64 N.
        per_class: images to keep per class.
        offset: images of each class to skip first (to carve disjoint subsets).

    Returns:
        ``(images, labels)`` copies, in their original relative order.

    Raises:
        ValueError: on bad shapes, a negative count, or a class with too few images.
    """
    _check_split(images, labels, "stratified_subset")
    if per_class < 1 or offset < 0:
        raise ValueError(f"need per_class >= 1 and offset >= 0, got {per_class}, {offset}")
    classes, counts = np.unique(labels, return_counts=True)
    short = {int(c): int(n) for c, n in zip(classes, counts, strict=True) if n < offset + per_class}
    if short:
        raise ValueError(
            f"stratified_subset needs {offset + per_class} images per class "
            f"(offset {offset} + per_class {per_class}); these classes have fewer: {short}"
        )
    rank = _class_ranks(labels)
    keep = np.flatnonzero((rank >= offset) & (rank < offset + per_class))
    return images[keep], labels[keep]


def _class_ranks(labels: np.ndarray) -> np.ndarray:
    """Rank of each sample within its class, in dataset order (stable sort keeps order)."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty_like(order)
    rank[order] = np.arange(labels.shape[0]) - starts
    return rank


def class_interleaved(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorders a split so that consecutive samples cycle through the classes.

    Every run of `n_classes` samples then holds one of each class (while the classes
    last), so any batch of an evaluation pass is class-balanced: what measurements
    with batch statistics need. Within a class, dataset order is kept.

    Raises:
        ValueError: on bad shapes.
    """
    _check_split(images, labels, "class_interleaved")
    order = np.lexsort((labels, _class_ranks(labels)))
    return images[order], labels[order]


def stratified_split(
    images: np.ndarray, labels: np.ndarray, val_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off a seeded validation set with ``val_per_class`` images of every class.

    Args:
        images: uint8 N x 32 x 32 x 3.
        labels: int64 N.
        val_per_class: validation images per class.
        seed: seed of the choice; the same seed gives the same split.

    Returns:
        ``(train_images, train_labels, val_images, val_labels)``; both parts keep
        the original relative order.

    Raises:
        ValueError: on bad shapes or when a class cannot spare ``val_per_class`` images.
    """
    _check_split(images, labels, "stratified_split")
    if val_per_class < 1:
        raise ValueError(f"val_per_class must be >= 1, got {val_per_class}")
    rng = np.random.default_rng(seed)
    is_val = np.zeros(labels.shape[0], dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if members.shape[0] <= val_per_class:
            raise ValueError(
                f"class {int(cls)} has {members.shape[0]} images; cannot hold out "
                f"{val_per_class} for validation and keep any for training"
            )
        is_val[rng.choice(members, size=val_per_class, replace=False)] = True
    return images[~is_val], labels[~is_val], images[is_val], labels[is_val]


class DeviceBatches:
    """Whole split as one uint8 tensor on ``device``; batched normalisation/augmentation.

    Batches are ``(x, y)``: ``x`` float32 B x 3 x 32 x 32 normalised with
    ``CIFAR10_MEAN``/``CIFAR10_STD`` in channels-last memory format (convolutions
    then take faster kernels on CPU: ``benchmarks/memory_format_bench.py``), ``y``
    int64 B, both on ``device``. Shuffling
    and augmentation (random crop with zero padding 4, then horizontal flip) draw only
    from the CPU generator passed to ``iterate``, so a given generator state gives
    the same batches on CPU and CUDA.

    Args:
        images: uint8 N x 32 x 32 x 3 (NHWC), numpy or torch.
        labels: integer N, numpy or torch.
        batch_size: samples per batch.
        device: where the data lives and batches are produced.
        augment: apply random crop and flip.
        shuffle: visit samples in a random order each pass.
        drop_last: drop a final batch smaller than ``batch_size``.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        device: torch.device | str = "cpu",
        augment: bool = False,
        shuffle: bool = False,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self._images = torch.as_tensor(images).to(self.device)
        labels_t = torch.as_tensor(labels)
        if self._images.dtype != torch.uint8 or self._images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(
                "images must be uint8 N x 32 x 32 x 3 (NHWC), "
                f"got {self._images.dtype} {tuple(self._images.shape)}"
            )
        if labels_t.ndim != 1 or labels_t.shape[0] != self._images.shape[0]:
            raise ValueError(
                f"labels must be 1-D with one label per image, got shape "
                f"{tuple(labels_t.shape)} for {self._images.shape[0]} images"
            )
        if labels_t.dtype.is_floating_point or labels_t.dtype.is_complex:
            raise ValueError(f"labels must be integers, got {labels_t.dtype}")
        if self._images.shape[0] == 0:
            raise ValueError("DeviceBatches needs at least one image")
        self._labels = labels_t.to(device=self.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.drop_last = drop_last
        std = torch.tensor(CIFAR10_STD, dtype=torch.float32, device=self.device)
        mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32, device=self.device)
        # x * scale + shift == (x / 255 - mean) / std, with one multiply and one add.
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
        self._shift = (-mean / std).view(1, 3, 1, 1)

    def __len__(self) -> int:
        """Batches in one full pass."""
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Images in the split."""
        return int(self._images.shape[0])

    def iterate(
        self, generator: torch.Generator | None = None, max_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield one pass of ``(x, y)`` batches, at most ``max_batches`` of them.

        Args:
            generator: CPU generator for shuffling and augmentation; required when
                either is on.
            max_batches: stop after this many batches (``None``: the full pass).

        Yields:
            ``x`` float32 B x 3 x 32 x 32 (normalised) and ``y`` int64 B on the device.

        Raises:
            ValueError: if a generator is needed but missing or not on the CPU.
        """
        if (self.shuffle or self.augment) and generator is None:
            raise ValueError(
                "shuffle/augment draw from a torch.Generator: pass iterate(generator=...)"
            )
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(
                f"the generator must live on the CPU (got {generator.device}) so that "
                "CPU and CUDA runs draw the same numbers"
            )
        if max_batches is not None and max_batches < 0:
            raise ValueError(f"max_batches must be >= 0, got {max_batches}")
        n_batches = len(self) if max_batches is None else min(len(self), max_batches)
        order = torch.randperm(self.num_samples, generator=generator) if self.shuffle else None
        if order is not None:
            order = order.to(self.device)
        for b in range(n_batches):
            start = b * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            if order is None:
                images, labels = self._images[start:stop], self._labels[start:stop]
            else:
                # index_select: an order of magnitude faster than images[idx] on uint8 rows.
                idx = order[start:stop]
                images = self._images.index_select(0, idx)
                labels = self._labels.index_select(0, idx)
            if self.augment:
                assert generator is not None  # checked above; narrows the type
                x = self._augmented(images, generator)
            else:
                x = self._to_float(images.permute(0, 3, 1, 2))
            yield x.mul_(self._scale).add_(self._shift), labels

    def _augmented(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random-crop (zero padding 4), then flip (p=0.5); float32 B x 3 x 32 x 32, 0..255."""
        size = images.shape[0]
        span = 2 * CROP_PADDING + 1
        offsets = torch.randint(0, span, (size, 2), generator=gen).to(self.device)
        flips = torch.randint(0, 2, (size,), generator=gen, dtype=torch.bool)
        # Indices are found on the CPU: a boolean mask on CUDA would sync every batch.
        flipped = flips.nonzero().squeeze(1).to(self.device)
        padded = torch.nn.functional.pad(images, (0, 0) + (CROP_PADDING,) * 4)
        side = IMAGE_SHAPE[0]
        # Every 32 x 32 window as a view (B x 9 x 9 x 3 x 32 x 32, channels first):
        # the crop is one gather of whole windows, with no per-pixel index math.
        windows = padded.unfold(1, side, 1).unfold(2, side, 1)
        rows = torch.arange(size, device=self.device)
        x = self._to_float(windows[rows, offsets[:, 0], offsets[:, 1]])
        # Flipping only the chosen samples, on dense rows, is the cheapest place.
        x.index_copy_(0, flipped, x.index_select(0, flipped).flip(3))
        return x

    @staticmethod
    def _to_float(pixels: torch.Tensor) -> torch.Tensor:
        """uint8 B x 3 x 32 x 32 of any strides to a new channels-last float32 tensor."""
        return pixels.to(torch.float32, memory_format=torch.channels_last)


# --------------------------------------------------------------------------- loading

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
DEFAULT_ROOT = Path("~/.cache/esper")
DOWNLOAD_NAME = "cifar-10-python.tar.gz"
PYTHON_BATCHES_DIR = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_BATCH_FILES = (*_TRAIN_BATCHES, "test_batch", "batches.meta")
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
_SPLITS = ("train", "test")
# Bump when decoding changes, so that caches written by older code are rebuilt.
_CACHE_FORMAT = 1
_CACHE_KEYS = frozenset(
    {"train_images", "train_labels", "test_images", "test_labels", "classes", "fingerprint"}
)

Source = Literal[
    "cache", "python-batches", "python-batches-tar", "image-folder", "image-folder-tar", "download"
]
_SourceKind = Literal["python-batches", "image-folder", "tar"]


class CifarDataError(ValueError):
    """CIFAR-10 data exists but is malformed, truncated, unsafe or of the wrong shape."""


class CifarNotFoundError(FileNotFoundError):
    """No CIFAR-10 data was found and none could be downloaded."""


@dataclass(frozen=True, eq=False)
class CifarArrays:
    """CIFAR-10 train and test splits as numpy arrays, validated on construction.

    The arrays may be shared between callers (see ``cached_cifar10``): treat them
    as read-only. Construction raises ``CifarDataError`` for other class names, a
    wrong image shape or dtype, an empty split, or labels outside 0..9.

    Attributes:
        train_images: uint8 N x 32 x 32 x 3.
        train_labels: int64 N, values in 0..9.
        test_images: uint8 M x 32 x 32 x 3.
        test_labels: int64 M, values in 0..9.
        classes: the ten class names in label order (``CIFAR10_CLASSES``).
        source: where the arrays came from.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: Source

    def __post_init__(self) -> None:
        if tuple(self.classes) != CIFAR10_CLASSES:
            raise CifarDataError(
                f"expected the 10 CIFAR-10 classes {CIFAR10_CLASSES}, got {tuple(self.classes)}"
            )
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            try:
                _check_split(images, labels, f"CIFAR-10 {split} split")
            except ValueError as err:
                raise CifarDataError(str(err)) from None
            if images.shape[0] == 0:
                raise CifarDataError(f"CIFAR-10 {split} split is empty")
            if labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES):
                raise CifarDataError(
                    f"CIFAR-10 {split} labels must lie in 0..9, "
                    f"got {int(labels.min())}..{int(labels.max())}"
                )


@dataclass(frozen=True)
class _Candidate:
    """A place that may hold CIFAR-10, with the fingerprint that keys its cache."""

    kind: _SourceKind
    path: Path
    fingerprint: str


_Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data root: ``data_dir``, else ``$ESPER_DATA_DIR``, else ``~/.cache/esper``."""
    raw = data_dir if data_dir is not None else os.environ.get("ESPER_DATA_DIR") or DEFAULT_ROOT
    return Path(raw).expanduser().resolve()


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the cache folder: ``cache_dir``, else ``$ESPER_CACHE_DIR``, else ``~/.cache/esper``.

    Data roots are never written to except by a download: a shared dataset folder
    stays untouched even when the process could write to it.
    """
    raw = cache_dir if cache_dir is not None else os.environ.get("ESPER_CACHE_DIR") or DEFAULT_ROOT
    return Path(raw).expanduser().resolve()


def load_cifar10(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CifarArrays:
    """Load CIFAR-10 from the first place that has it.

    Order: a decoded cache of any source below; ``cifar-10-batches-py/`` (the
    official python release, read with a restricted unpickler); an image folder
    ``train/<class>/*.{jpg,png}`` + ``test/<class>/...``; any ``*.tar.gz`` in the
    root holding either layout; else, if ``download``, the official archive.
    Whatever is decoded is cached (atomically) for the next load.

    Args:
        data_dir: the root (see ``data_root``).
        download: fetch the official archive into the root when nothing is found.
        cache_dir: where decoded caches live (see ``cache_root``).

    Returns:
        The validated arrays and their source.

    Raises:
        CifarNotFoundError: nothing found and no download (lists where it looked).
        CifarDataError: data found but malformed, truncated, unsafe or misshapen.
    """
    root = data_root(data_dir)
    cache = cache_root(cache_dir)
    candidates = _candidates(root)
    for cand in candidates:
        splits = _read_cache(_cache_path(cache, cand), cand.fingerprint)
        if splits is not None:
            return CifarArrays(*splits, classes=CIFAR10_CLASSES, source="cache")
    skipped: list[Path] = []
    for cand in candidates:
        decoded = _decode(cand)
        if decoded is None:
            skipped.append(cand.path)
            continue
        splits, source = decoded
        return _cached_result(splits, source, cache, cand)
    if not download:
        raise CifarNotFoundError(_not_found_message(root, cache, skipped, "download=False"))
    try:
        archive = _download(root)
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        raise CifarNotFoundError(
            _not_found_message(root, cache, skipped, f"download failed: {err}")
        ) from err
    cand = _candidate_for("tar", archive)
    decoded = _decode(cand)
    if decoded is None:
        raise CifarDataError(f"{archive}: the downloaded archive holds no CIFAR-10 layout")
    return _cached_result(decoded[0], "download", cache, cand)


def cached_cifar10(data_dir: str | os.PathLike[str] | None = None) -> CifarArrays:
    """``load_cifar10`` once per resolved root and process; later calls share the arrays."""
    return _load_once(data_root(data_dir))


@functools.cache
def _load_once(root: Path) -> CifarArrays:
    return load_cifar10(root)


def _cached_result(splits: _Splits, source: Source, cache: Path, cand: _Candidate) -> CifarArrays:
    """Validate decoded splits, write them to the cache and wrap them."""
    arrays = CifarArrays(*splits, classes=CIFAR10_CLASSES, source=source)
    _write_cache(_cache_path(cache, cand), cand.fingerprint, splits)
    return arrays


def _not_found_message(root: Path, cache: Path, skipped: list[Path], download: str) -> str:
    tars = ", ".join(str(p) for p in skipped) or "none"
    return (
        f"No CIFAR-10 data found. Root: {root} (data_dir=, else $ESPER_DATA_DIR, "
        f"else {DEFAULT_ROOT}). Looked for:\n"
        f"  - a decoded cache cifar10-*.npz in {cache} (made by an earlier load)\n"
        f"  - {root / PYTHON_BATCHES_DIR}/ (official python release)\n"
        f"  - {root / 'train'}/<class>/*.jpg|png and {root / 'test'}/<class>/ (image folder)\n"
        f"  - {root}/*.tar.gz holding either layout (tar.gz files without one: {tars})\n"
        f"  - {CIFAR10_URL}: {download}\n"
        "To provide the data: set ESPER_DATA_DIR (or pass data_dir=) to a folder holding "
        f"{PYTHON_BATCHES_DIR}/, train/ + test/ image folders, or a .tar.gz of either "
        "(e.g. cifar10-jpeg.tar.gz); or call load_cifar10(download=True) with network access."
    )


# ---- candidates, fingerprints and the cache


def _candidates(root: Path) -> list[_Candidate]:
    """Every place under ``root`` that may hold CIFAR-10, in lookup order."""
    found: list[_Candidate] = []
    if (root / PYTHON_BATCHES_DIR).is_dir():
        found.append(_candidate_for("python-batches", root / PYTHON_BATCHES_DIR))
    if all((root / split).is_dir() for split in _SPLITS):
        found.append(_candidate_for("image-folder", root))
    if root.is_dir():
        found.extend(_candidate_for("tar", p) for p in sorted(root.glob("*.tar.gz")) if p.is_file())
    return found


def _candidate_for(kind: _SourceKind, path: Path) -> _Candidate:
    """Fingerprint a source by the names, sizes and mtimes of the files it is read from."""
    if kind == "python-batches":
        files = [path / name for name in _BATCH_FILES if (path / name).is_file()]
    elif kind == "image-folder":
        files = sorted(
            f
            for split in _SPLITS
            for class_dir in (path / split).iterdir()
            if class_dir.is_dir()
            for f in class_dir.iterdir()
            if f.suffix.lower() in _IMAGE_SUFFIXES
        )
    else:
        files = [path]
    digest = hashlib.sha256(f"{_CACHE_FORMAT}\n{kind}\n{path}\n".encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(path.parent)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return _Candidate(kind, path, digest.hexdigest())


def _cache_path(cache: Path, cand: _Candidate) -> Path:
    """One cache file per source path; its content records the source's fingerprint."""
    return cache / f"cifar10-{hashlib.sha256(str(cand.path).encode()).hexdigest()[:16]}.npz"


def _read_cache(path: Path, fingerprint: str) -> _Splits | None:
    """Return the cached splits, or ``None`` (with a warning) if the cache is not sound."""
    if not path.is_file():
        return None
    try:
        return _load_cache_file(path, fingerprint)
    except CifarDataError as err:
        logger.warning("ignoring CIFAR-10 cache %s: %s; rebuilding it", path, err)
        return None


def _load_cache_file(path: Path, fingerprint: str) -> _Splits:
    """Read and fully validate a cache file; raise ``CifarDataError`` on any defect."""
    # The cache is untrusted input: each of these means it cannot be read back.
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CifarDataError(f"unreadable ({err})") from err
    if set(contents) != _CACHE_KEYS:
        raise CifarDataError(f"keys {sorted(contents)}, expected {sorted(_CACHE_KEYS)}")
    if str(contents["fingerprint"]) != fingerprint:
        raise CifarDataError("it was built from another version of the source")
    if tuple(contents["classes"].tolist()) != CIFAR10_CLASSES:
        raise CifarDataError(f"classes {contents['classes'].tolist()} are not CIFAR-10's")
    splits = (
        contents["train_images"],
        contents["train_labels"],
        contents["test_images"],
        contents["test_labels"],
    )
    CifarArrays(*splits, classes=CIFAR10_CLASSES, source="cache")
    return splits


def _write_cache(path: Path, fingerprint: str, splits: _Splits) -> None:
    """Write the cache atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    done = False
    try:
        with tmp.open("xb") as f:
            # Uncompressed: loading then costs little more than reading the bytes.
            np.savez(
                f,
                train_images=splits[0],
                train_labels=splits[1],
                test_images=splits[2],
                test_labels=splits[3],
                classes=np.array(CIFAR10_CLASSES),
                fingerprint=np.array(fingerprint),
            )
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)
    logger.info("wrote CIFAR-10 cache %s", path)


# ---- decoding


def _decode(cand: _Candidate) -> tuple[_Splits, Source] | None:
    """Decode a candidate; ``None`` for a tar.gz that holds no CIFAR-10 layout."""
    logger.info("decoding CIFAR-10 from %s (%s)", cand.path, cand.kind)
    if cand.kind == "python-batches":
        missing = [name for name in _BATCH_FILES if not (cand.path / name).is_file()]
        if missing:
            raise CifarDataError(f"{cand.path} lacks {missing}")
        return _decode_python_batches(lambda name: (cand.path / name).read_bytes(), cand.path), (
            "python-batches"
        )
    if cand.kind == "image-folder":
        return _decode_image_folder(cand.path), "image-folder"
    return _decode_tar(cand.path)


_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # Protocol-5 array pickles.
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        # How Python 3 writes a bytes object in a protocol-2 pickle.
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits builtin containers, bytes, numbers and numpy arrays; refuses any other global."""

    def __init__(self, data: bytes, where: str) -> None:
        # encoding="bytes": the official batches are Python 2 pickles with byte-string keys.
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._where = where

    def find_class(self, module: str, name: str) -> Callable[..., object]:
        if (module, name) not in _PICKLE_GLOBALS:
            raise CifarDataError(
                f"{self._where}: refusing to unpickle global {module}.{name}; CIFAR-10 batches "
                "may hold only builtin containers, bytes, numbers and numpy arrays"
            )
        return super().find_class(module, name)


def _unpickle_dict(data: bytes, where: str) -> dict[bytes, object]:
    try:
        obj = _RestrictedUnpickler(data, where).load()
    except (pickle.UnpicklingError, EOFError) as err:
        raise CifarDataError(f"{where}: truncated or corrupt pickle ({err})") from err
    if not isinstance(obj, dict):
        raise CifarDataError(f"{where}: expected a dict, got {type(obj).__name__}")
    return obj


def _batch_entry(batch: dict[bytes, object], key: bytes, where: str) -> object:
    if key not in batch:
        raise CifarDataError(f"{where}: missing key {key!r} (has {sorted(map(repr, batch))})")
    return batch[key]


def _decode_python_batches(read: Callable[[str], bytes], where: Path | str) -> _Splits:
    """Decode the official python release; ``read(name)`` returns one batch file's bytes."""
    meta = _unpickle_dict(read("batches.meta"), f"{where}/batches.meta")
    names = _batch_entry(meta, b"label_names", f"{where}/batches.meta")
    if (
        not isinstance(names, list)
        or tuple(n.decode(errors="replace") if isinstance(n, bytes) else n for n in names)
        != CIFAR10_CLASSES
    ):
        raise CifarDataError(
            f"{where}/batches.meta: label_names {names!r} are not the CIFAR-10 classes "
            f"{CIFAR10_CLASSES}"
        )

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        at = f"{where}/{name}"
        entries = _unpickle_dict(read(name), at)
        data = _batch_entry(entries, b"data", at)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
            raise CifarDataError(f"{at}: b'data' must be a uint8 N x 3072 array")
        if data.shape[1] != 3 * 32 * 32:
            raise CifarDataError(f"{at}: b'data' rows have {data.shape[1]} values, expected 3072")
        try:
            labels = np.asarray(_batch_entry(entries, b"labels", at), dtype=np.int64)
        except (TypeError, ValueError) as err:
            raise CifarDataError(f"{at}: b'labels' must be a list of integers ({err})") from err
        # Rows are channel-planar (1024 R, 1024 G, 1024 B): reorder to NHWC.
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), labels

    train = [batch(name) for name in _TRAIN_BATCHES]
    test_images, test_labels = batch("test_batch")
    return (
        np.concatenate([images for images, _ in train]),
        np.concatenate([labels for _, labels in train]),
        test_images,
        test_labels,
    )


def _decode_image(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size != (32, 32):
                raise CifarDataError(f"{where}: image is {img.size[0]}x{img.size[1]}, not 32x32")
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise CifarDataError(f"{where}: not a readable image ({err})") from err


def _stack(files: dict[tuple[int, int, str], np.ndarray], where: Path) -> _Splits:
    """Arrange decoded images keyed (split, label, name) into the two splits."""
    splits: list[np.ndarray] = []
    for split_index, split in enumerate(_SPLITS):
        keys = sorted(k for k in files if k[0] == split_index)
        present = {label for _, label, _ in keys}
        if len(present) != len(CIFAR10_CLASSES):
            missing = [CIFAR10_CLASSES[i] for i in range(len(CIFAR10_CLASSES)) if i not in present]
            raise CifarDataError(f"{where}: {split}/ has no images for classes {missing}")
        splits.append(np.stack([files[k] for k in keys]))
        splits.append(np.array([label for _, label, _ in keys], dtype=np.int64))
    return splits[0], splits[1], splits[2], splits[3]


def _class_label(name: str, where: str) -> int:
    if name not in CIFAR10_CLASSES:
        raise CifarDataError(
            f"{where}: unexpected class folder {name!r}; expected exactly {CIFAR10_CLASSES}"
        )
    return CIFAR10_CLASSES.index(name)


def _decode_image_folder(root: Path) -> _Splits:
    """Decode ``root/{train,test}/<class>/*.{jpg,jpeg,png}``."""
    files: dict[tuple[int, int, str], np.ndarray] = {}
    for split_index, split in enumerate(_SPLITS):
        for class_dir in (root / split).iterdir():
            if not class_dir.is_dir():
                continue
            label = _class_label(class_dir.name, str(root / split))
            for f in class_dir.iterdir():
                if f.suffix.lower() in _IMAGE_SUFFIXES:
                    files[split_index, label, f.name] = _decode_image(f.read_bytes(), str(f))
    return _stack(files, root)


# An image-folder member, optionally under one top-level folder.
_TAR_IMAGE = re.compile(r"(?:[^/]+/)?(train|test)/([^/]+)/([^/]+\.(?i:jpe?g|png))")
_TAR_BATCH = re.compile(rf"{PYTHON_BATCHES_DIR}/({'|'.join(map(re.escape, _BATCH_FILES))})")


def _decode_tar(path: Path) -> tuple[_Splits, Source] | None:
    """Decode a ``.tar.gz`` of either layout straight from the archive (nothing is extracted)."""
    images: dict[tuple[int, int, str], np.ndarray] = {}
    batches: dict[str, bytes] = {}
    try:
        # Streaming mode: one sequential pass over the gzip stream.
        with tarfile.open(path, "r|gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name.startswith("/") or ".." in name.split("/"):
                    raise CifarDataError(f"{path}: unsafe member name {member.name!r}")
                image = _TAR_IMAGE.fullmatch(name)
                batch = _TAR_BATCH.fullmatch(name)
                if not (image or batch):
                    continue
                if not member.isfile():
                    raise CifarDataError(f"{path}: {member.name!r} is a link or special file")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has a handle
                data = handle.read()
                if batch:
                    batches[batch.group(1)] = data
                elif image:
                    split, cls, fname = image.groups()
                    key = (_SPLITS.index(split), _class_label(cls, f"{path}:{name}"), fname)
                    images[key] = _decode_image(data, f"{path}:{name}")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise CifarDataError(
            f"{path}: truncated or corrupt archive ({err}); delete or replace it"
        ) from err
    if batches:
        missing = [name for name in _BATCH_FILES if name not in batches]
        if missing:
            raise CifarDataError(f"{path}: {PYTHON_BATCHES_DIR}/ lacks {missing}")
        return _decode_python_batches(batches.__getitem__, f"{path}:{PYTHON_BATCHES_DIR}"), (
            "python-batches-tar"
        )
    if images:
        return _stack(images, path), "image-folder-tar"
    return None


def _download(root: Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Download the official archive into ``root``; return its path.

    The bytes go to a ``.partial`` file that is renamed only once complete and
    md5-verified; on any failure it is deleted.

    Raises:
        CifarDataError: the md5 does not match.
        urllib.error.URLError, OSError: the download failed.
    """
    root.mkdir(parents=True, exist_ok=True)
    target = root / DOWNLOAD_NAME
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.md5(usedforsecurity=False)
    done = False
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"CIFAR-10 {url}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise CifarDataError(
                f"download from {url} has md5 {digest.hexdigest()}, expected {md5}; "
                "the partial file was deleted"
            )
        os.replace(partial, target)
        done = True
    finally:
        if not done:
            partial.unlink(missing_ok=True)
    logger.info("downloaded %s to %s", url, target)
    return target
