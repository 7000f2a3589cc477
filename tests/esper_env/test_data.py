"""Tests for esper_env.data: every on-disk format, safety, caching, download, batches."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import re
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from esper_env import data
from esper_env.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CifarArrays,
    CifarDataError,
    CifarNotFoundError,
    DeviceBatches,
    cache_root,
    cached_cifar10,
    class_interleaved,
    data_root,
    load_cifar10,
    stratified_split,
    stratified_subset,
)

Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
TRAIN_PER_CLASS = 3
TEST_PER_CLASS = 2


def tiny_splits(seed: int = 0, flat: bool = False) -> Splits:
    """Random CIFAR-shaped splits; labels interleaved (0, 1, ..., 9, 0, ...) as in the release.

    ``flat`` gives every image a single colour, which JPEG reproduces almost exactly.
    """
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for per_class in (TRAIN_PER_CLASS, TEST_PER_CLASS):
        n = per_class * len(CIFAR10_CLASSES)
        if flat:
            colours = rng.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8)
            images = np.ascontiguousarray(np.broadcast_to(colours, (n, 32, 32, 3)))
        else:
            images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        out += [images, np.arange(n, dtype=np.int64) % len(CIFAR10_CLASSES)]
    return out[0], out[1], out[2], out[3]


def by_class(splits: Splits) -> Splits:
    """The order an image folder comes back in: by class, then by file name (= index)."""
    train = np.argsort(splits[1], kind="stable")
    test = np.argsort(splits[3], kind="stable")
    return splits[0][train], splits[1][train], splits[2][test], splits[3][test]


def assert_splits_equal(arrays: CifarArrays, expected: Splits) -> None:
    got = (arrays.train_images, arrays.train_labels, arrays.test_images, arrays.test_labels)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)
    assert arrays.classes == CIFAR10_CLASSES


def batch_dict(images: np.ndarray, labels: np.ndarray) -> dict[bytes, object]:
    """One batch in the official format: channel-planar rows and byte-string keys."""
    return {
        b"batch_label": b"a batch",
        b"labels": [int(v) for v in labels],
        b"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1)),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }


def write_python_batches(root: Path, splits: Splits, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    chunks = zip(np.array_split(splits[0], 5), np.array_split(splits[1], 5), strict=True)
    for i, (images, labels) in enumerate(chunks, start=1):
        (folder / f"data_batch_{i}").write_bytes(
            pickle.dumps(batch_dict(images, labels), protocol=protocol)
        )
    (folder / "test_batch").write_bytes(
        pickle.dumps(batch_dict(splits[2], splits[3]), protocol=protocol)
    )
    meta = {b"num_cases_per_batch": 10000, b"label_names": [c.encode() for c in CIFAR10_CLASSES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


def write_image_folder(root: Path, splits: Splits, suffix: str = ".png") -> None:
    for split, images, labels in (("train", *splits[:2]), ("test", *splits[2:])):
        for cls in CIFAR10_CLASSES:
            (root / split / cls).mkdir(parents=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(root / split / CIFAR10_CLASSES[label] / f"{i:04d}{suffix}")


def write_tar(path: Path, source: Path, names: list[str], prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            tar.add(source / name, arcname=prefix + name)
    return path


def load(root: Path, tmp_path: Path, download: bool = False) -> CifarArrays:
    """Load with the cache in ``tmp_path/cache`` (never the user's home), offline by default."""
    return load_cifar10(root, download, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python_batches_load_then_come_from_cache(tmp_path: Path, protocol: int) -> None:
    splits = tiny_splits()
    write_python_batches(tmp_path / "data", splits, protocol)
    first = load(tmp_path / "data", tmp_path)
    assert first.source == "python-batches"
    assert_splits_equal(first, splits)
    # The cache goes to the cache folder; the data root is left as it was.
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["cifar-10-batches-py"]
    second = load(tmp_path / "data", tmp_path)
    assert second.source == "cache"
    assert_splits_equal(second, splits)


def test_png_image_folder_is_exact(tmp_path: Path) -> None:
    splits = tiny_splits()
    write_image_folder(tmp_path / "data", splits, ".png")
    arrays = load(tmp_path / "data", tmp_path)
    assert arrays.source == "image-folder"
    assert_splits_equal(arrays, by_class(splits))


def test_jpg_image_folder_decodes_close_to_the_source(tmp_path: Path) -> None:
    splits = tiny_splits(flat=True)
    write_image_folder(tmp_path / "data", splits, ".jpg")
    arrays = load(tmp_path / "data", tmp_path)
    expected = by_class(splits)
    assert arrays.source == "image-folder"
    np.testing.assert_array_equal(arrays.train_labels, expected[1])
    np.testing.assert_array_equal(arrays.test_labels, expected[3])
    # JPEG is lossy; flat colours survive within a few levels.
    diff = np.abs(arrays.train_images.astype(int) - expected[0].astype(int))
    assert diff.max() <= 3


@pytest.mark.parametrize("prefix", ["", "CIFAR-10-images/"])
def test_image_folder_tar_is_read_without_extracting(tmp_path: Path, prefix: str) -> None:
    splits = tiny_splits()
    write_image_folder(tmp_path / "src", splits)
    root = tmp_path / "data"
    root.mkdir()
    write_tar(root / "cifar10-png.tar.gz", tmp_path / "src", ["train", "test"], prefix)
    arrays = load(root, tmp_path)
    assert arrays.source == "image-folder-tar"
    assert_splits_equal(arrays, by_class(splits))
    assert sorted(p.name for p in root.iterdir()) == ["cifar10-png.tar.gz"]
    assert load(root, tmp_path).source == "cache"


def test_python_batches_tar(tmp_path: Path) -> None:
    splits = tiny_splits()
    write_python_batches(tmp_path / "src", splits)
    root = tmp_path / "data"
    root.mkdir()
    write_tar(root / "cifar-10-python.tar.gz", tmp_path / "src", ["cifar-10-batches-py"])
    arrays = load(root, tmp_path)
    assert arrays.source == "python-batches-tar"
    assert_splits_equal(arrays, splits)


def test_python_batches_take_precedence_over_an_image_folder(tmp_path: Path) -> None:
    batches, folder = tiny_splits(seed=1), tiny_splits(seed=2)
    write_python_batches(tmp_path / "data", batches)
    write_image_folder(tmp_path / "data", folder)
    arrays = load(tmp_path / "data", tmp_path)
    assert arrays.source == "python-batches"
    assert_splits_equal(arrays, batches)


def test_tar_without_a_cifar_layout_is_skipped_and_reported(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("nothing to see")
    root = tmp_path / "data"
    root.mkdir()
    write_tar(root / "other.tar.gz", tmp_path / "src", ["notes.txt"])
    with pytest.raises(CifarNotFoundError, match=r"other\.tar\.gz"):
        load(root, tmp_path)


# ---------------------------------------------------------------- safety and validation


@pytest.mark.parametrize(
    ("module", "name"), [("os", "system"), ("builtins", "eval"), ("subprocess", "call")]
)
def test_pickle_naming_another_global_is_refused(tmp_path: Path, module: str, name: str) -> None:
    folder = write_python_batches(tmp_path / "data", tiny_splits())
    marker = tmp_path / "pwned"
    # Protocol-0 pickle calling module.name("touch <marker>"), as a hostile batch would.
    payload = f"c{module}\n{name}\n(Vtouch {marker}\ntR.".encode()
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(CifarDataError, match=rf"data_batch_3: refusing .* {module}\.{name}"):
        load(tmp_path / "data", tmp_path)
    assert not marker.exists()


def test_truncated_archive_is_a_clear_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "src", tiny_splits())
    root = tmp_path / "data"
    root.mkdir()
    good = write_tar(tmp_path / "good.tar.gz", tmp_path / "src", ["train", "test"])
    (root / "cifar.tar.gz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CifarDataError, match=r"cifar\.tar\.gz: truncated or corrupt archive"):
        load(root, tmp_path)


def test_tar_member_escaping_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "src" / "x.png")
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "evil.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "x.png", arcname="../train/cat/x.png")
    with pytest.raises(CifarDataError, match="unsafe member name"):
        load(root, tmp_path)


def test_link_in_the_tar_layout_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "links.tar.gz", "w:gz") as tar:
        link = tarfile.TarInfo("train/cat/0000.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(CifarDataError, match="link or special file"):
        load(root, tmp_path)


def test_extra_class_folder_is_an_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "data", tiny_splits())
    (tmp_path / "data" / "train" / "unicorn").mkdir()
    with pytest.raises(CifarDataError, match="unexpected class folder 'unicorn'"):
        load(tmp_path / "data", tmp_path)


def test_missing_class_is_an_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "data", tiny_splits())
    for f in (tmp_path / "data" / "test" / "frog").iterdir():
        f.unlink()
    with pytest.raises(CifarDataError, match=r"test/ has no images for classes \['frog'\]"):
        load(tmp_path / "data", tmp_path)


def test_wrong_image_size_is_an_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "data", tiny_splits())
    Image.new("RGB", (33, 32)).save(tmp_path / "data" / "train" / "cat" / "big.png")
    with pytest.raises(CifarDataError, match=r"big\.png: image is 33x32, not 32x32"):
        load(tmp_path / "data", tmp_path)


def test_label_out_of_range_is_an_error(tmp_path: Path) -> None:
    splits = tiny_splits()
    bad_labels = splits[3].copy()
    bad_labels[0] = 10
    write_python_batches(tmp_path / "data", (splits[0], splits[1], splits[2], bad_labels))
    with pytest.raises(CifarDataError, match=r"test labels must lie in 0\.\.9, got 0\.\.10"):
        load(tmp_path / "data", tmp_path)


def test_wrong_class_names_are_an_error(tmp_path: Path) -> None:
    folder = write_python_batches(tmp_path / "data", tiny_splits())
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES[:9]]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    with pytest.raises(CifarDataError, match="are not the CIFAR-10 classes"):
        load(tmp_path / "data", tmp_path)


def test_missing_batch_file_is_an_error(tmp_path: Path) -> None:
    folder = write_python_batches(tmp_path / "data", tiny_splits())
    (folder / "test_batch").unlink()
    with pytest.raises(CifarDataError, match=r"lacks \['test_batch'\]"):
        load(tmp_path / "data", tmp_path)


def test_batch_with_wrong_row_length_is_an_error(tmp_path: Path) -> None:
    folder = write_python_batches(tmp_path / "data", tiny_splits())
    batch = {b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(CifarDataError, match="rows have 3071 values, expected 3072"):
        load(tmp_path / "data", tmp_path)


# ---------------------------------------------------------------- cache


def _truncate(path: Path, _: str) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _garbage(path: Path, _: str) -> None:
    path.write_bytes(b"not a zip file at all")


def _wrong_shape(path: Path, fingerprint: str) -> None:
    splits = tiny_splits()
    np.savez(
        path,
        train_images=splits[0][:, :31],
        train_labels=splits[1],
        test_images=splits[2],
        test_labels=splits[3],
        classes=np.array(CIFAR10_CLASSES),
        fingerprint=np.array(fingerprint),
    )


def _missing_key(path: Path, _: str) -> None:
    with np.load(path) as npz:
        kept = {k: npz[k] for k in npz.files if k != "classes"}
    np.savez(path, **kept)


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_truncate, "unreadable"),
        (_garbage, "unreadable"),
        (
            _wrong_shape,
            r"images must be uint8 N x 32 x 32 x 3 \(NHWC\), got uint8 \(30, 31, 32, 3\)",
        ),
        (_missing_key, "keys"),
    ],
)
def test_unsound_cache_is_rebuilt_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    corrupt: Callable[[Path, str], None],
    reason: str,
) -> None:
    splits = tiny_splits()
    write_python_batches(tmp_path / "data", splits)
    load(tmp_path / "data", tmp_path)
    (cache_file,) = (tmp_path / "cache").iterdir()
    with np.load(cache_file) as npz:
        fingerprint = str(npz["fingerprint"])
    corrupt(cache_file, fingerprint)
    with caplog.at_level(logging.WARNING, logger="esper_env.data"):
        rebuilt = load(tmp_path / "data", tmp_path)
    assert rebuilt.source == "python-batches"
    assert_splits_equal(rebuilt, splits)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(cache_file) in warnings[0]
    assert re.search(reason, warnings[0])
    again = load(tmp_path / "data", tmp_path)
    assert again.source == "cache"
    assert_splits_equal(again, splits)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache_file.name]


def test_cache_of_a_changed_source_is_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_python_batches(tmp_path / "data", tiny_splits(seed=1))
    load(tmp_path / "data", tmp_path)
    newer = tiny_splits(seed=2)
    (folder / "test_batch").write_bytes(pickle.dumps(batch_dict(newer[2], newer[3])))
    os.utime(folder / "test_batch", ns=(1, 1))
    with caplog.at_level(logging.WARNING, logger="esper_env.data"):
        arrays = load(tmp_path / "data", tmp_path)
    assert arrays.source == "python-batches"
    np.testing.assert_array_equal(arrays.test_images, newer[2])
    assert "another version of the source" in caplog.text


# ---------------------------------------------------------------- not found and download


def test_nothing_found_offline_lists_where_it_looked(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    with pytest.raises(CifarNotFoundError) as info:
        load(root, tmp_path)
    message = str(info.value)
    for needle in (
        str(root / "cifar-10-batches-py"),
        str(root / "train"),
        f"{root}/*.tar.gz",
        str(tmp_path / "cache"),
        "download=False",
        "ESPER_DATA_DIR",
    ):
        assert needle in message
    assert not root.exists()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a temporary folder: (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served))
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", served
    server.shutdown()
    server.server_close()
    thread.join()


def serve_official_archive(tmp_path: Path, served: Path, splits: Splits) -> str:
    """Put a tiny archive in the official layout on the server; return its md5."""
    write_python_batches(tmp_path / "release", splits)
    archive = write_tar(
        served / "cifar-10-python.tar.gz", tmp_path / "release", ["cifar-10-batches-py"]
    )
    return hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_with_wrong_md5_leaves_no_file(
    tmp_path: Path, http_server: tuple[str, Path]
) -> None:
    url, served = http_server
    serve_official_archive(tmp_path, served, tiny_splits())
    root = tmp_path / "root"
    with pytest.raises(CifarDataError, match=r"expected 0{32}; the partial file was deleted"):
        data._download(root, url=f"{url}/cifar-10-python.tar.gz", md5="0" * 32)
    assert list(root.iterdir()) == []


def test_download_loads_and_is_cached(
    tmp_path: Path, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = http_server
    splits = tiny_splits()
    md5 = serve_official_archive(tmp_path, served, splits)
    monkeypatch.setattr(
        data,
        "_download",
        functools.partial(data._download, url=f"{url}/cifar-10-python.tar.gz", md5=md5),
    )
    root = tmp_path / "root"
    arrays = load(root, tmp_path, download=True)
    assert arrays.source == "download"
    assert_splits_equal(arrays, splits)
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]
    assert load(root, tmp_path).source == "cache"


def test_failed_download_is_a_not_found_error(
    tmp_path: Path, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = http_server
    monkeypatch.setattr(
        data, "_download", functools.partial(data._download, url=f"{url}/missing.tar.gz")
    )
    root = tmp_path / "root"
    with pytest.raises(CifarNotFoundError, match="download failed: HTTP Error 404"):
        load(root, tmp_path, download=True)
    assert list(root.iterdir()) == []


# ---------------------------------------------------------------- roots and memoisation


def test_roots_follow_argument_then_environment_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ESPER_DATA_DIR", raising=False)
    monkeypatch.delenv("ESPER_CACHE_DIR", raising=False)
    default = tmp_path / "home" / ".cache" / "esper"
    assert data_root() == default
    assert cache_root() == default
    monkeypatch.setenv("ESPER_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("ESPER_CACHE_DIR", str(tmp_path / "env-cache"))
    assert data_root() == tmp_path / "env-data"
    assert cache_root() == tmp_path / "env-cache"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_cached_cifar10_shares_one_copy_per_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESPER_CACHE_DIR", str(tmp_path / "cache"))
    write_python_batches(tmp_path / "data", tiny_splits())
    first = cached_cifar10(tmp_path / "data")
    assert cached_cifar10(str(tmp_path / "data" / "cifar-10-batches-py" / "..")) is first


# ---------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory: pytest.TempPathFactory) -> tuple[CifarArrays, CifarArrays]:
    """The shared dataset loaded twice through a fresh cache: (decoded, cached)."""
    if not os.environ.get("ESPER_DATA_DIR"):
        pytest.skip("ESPER_DATA_DIR is not set; point it at the folder holding CIFAR-10")
    cache = tmp_path_factory.mktemp("cifar-cache")
    return load_cifar10(cache_dir=cache), load_cifar10(cache_dir=cache)


@pytest.mark.cifar
def test_real_cifar10_loads_then_comes_from_cache(
    real_cifar: tuple[CifarArrays, CifarArrays],
) -> None:
    decoded, cached = real_cifar
    assert decoded.source != "cache"
    assert cached.source == "cache"
    for arrays in real_cifar:
        assert arrays.classes == CIFAR10_CLASSES
        assert arrays.train_images.shape == (50_000, 32, 32, 3)
        assert arrays.test_images.shape == (10_000, 32, 32, 3)
        assert np.bincount(arrays.train_labels).tolist() == [5_000] * 10
        assert np.bincount(arrays.test_labels).tolist() == [1_000] * 10
    # np.array_equal: assert_array_equal takes seconds on 150 MB.
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(decoded, name), getattr(cached, name)), name
    # The channel means of real photos, not noise or a constant.
    means = decoded.train_images.reshape(-1, 3)[::97].mean(axis=0) / 255
    np.testing.assert_allclose(means, CIFAR10_MEAN, atol=0.01)


# ---------------------------------------------------------------- subsets


def test_stratified_subset_takes_first_per_class_after_offset() -> None:
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0], dtype=np.int64)
    images = np.zeros((10, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(10)
    sub_images, sub_labels = stratified_subset(images, labels, per_class=2, offset=1)
    # Class 0 at 0,2,5,9 -> 2,5; class 1 at 1,4,8 -> 4,8; class 2 at 3,6,7 -> 6,7.
    assert sub_images[:, 0, 0, 0].tolist() == [2, 4, 5, 6, 7, 8]
    assert sub_labels.tolist() == labels[[2, 4, 5, 6, 7, 8]].tolist()
    with pytest.raises(ValueError, match=r"these classes have fewer: \{1: 3, 2: 3\}"):
        stratified_subset(images, labels, per_class=3, offset=1)


def test_class_interleaved_cycles_through_the_classes_keeping_order_within_each() -> None:
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 0], dtype=np.int64)
    images = np.zeros((10, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(10)
    out_images, out_labels = class_interleaved(images, labels)
    # Rank 0 of each class, then rank 1, ...; class 0 has a fourth sample left at the end.
    assert out_labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert out_images[:, 0, 0, 0].tolist() == [0, 1, 3, 2, 4, 6, 5, 8, 7, 9]
    assert out_labels.tolist() == labels[out_images[:, 0, 0, 0]].tolist()
    with pytest.raises(ValueError, match="class_interleaved"):
        class_interleaved(images, labels.astype(np.int32))


def test_class_interleaved_batches_of_a_balanced_split_are_balanced() -> None:
    gen = np.random.default_rng(0)
    labels = gen.permutation(np.repeat(np.arange(10, dtype=np.int64), 7))
    images = np.zeros((70, 32, 32, 3), np.uint8)
    _, out = class_interleaved(images, labels)
    assert sorted(out.tolist()) == sorted(labels.tolist())
    for start in range(0, 70, 10):
        assert sorted(out[start : start + 10].tolist()) == list(range(10))


def test_stratified_split_is_seeded_stratified_and_disjoint() -> None:
    n = 200
    labels = np.arange(n, dtype=np.int64) % 10
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.divmod(np.arange(n), 256)

    def ids(x: np.ndarray) -> np.ndarray:
        return x[:, 0, 0, 0].astype(int) * 256 + x[:, 0, 0, 1]

    tr_x, tr_y, va_x, va_y = stratified_split(images, labels, val_per_class=3, seed=7)
    assert np.bincount(va_y).tolist() == [3] * 10
    assert np.bincount(tr_y).tolist() == [17] * 10
    assert sorted([*ids(tr_x), *ids(va_x)]) == list(range(n))
    np.testing.assert_array_equal(labels[ids(va_x)], va_y)
    again = stratified_split(images, labels, val_per_class=3, seed=7)
    np.testing.assert_array_equal(again[2], va_x)
    other = stratified_split(images, labels, val_per_class=3, seed=8)
    assert set(ids(other[2])) != set(ids(va_x))
    with pytest.raises(ValueError, match="cannot hold out 20"):
        stratified_split(images, labels, val_per_class=20, seed=0)


# ---------------------------------------------------------------- DeviceBatches


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: float B x 3 x 32 x 32 back to uint8 B x 32 x 32 x 3."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    pixels = (x * std + mean) * 255
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_plain_batches_are_normalised_in_order() -> None:
    images = random_images(10)
    labels = np.arange(10, dtype=np.int64)
    batches = DeviceBatches(images, labels, batch_size=4)
    assert len(batches) == 3
    assert batches.num_samples == 10
    out = list(batches.iterate())
    assert [x.shape[0] for x, _ in out] == [4, 4, 2]
    x, y = out[0]
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 3]
    mean = np.array(CIFAR10_MEAN, np.float32)
    std = np.array(CIFAR10_STD, np.float32)
    expected = ((images[:4] / np.float32(255) - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)
    assert len(DeviceBatches(images, labels, batch_size=4, drop_last=True)) == 2
    assert len(list(batches.iterate(max_batches=2))) == 2


def test_shuffled_pass_visits_every_sample_once() -> None:
    batches = DeviceBatches(
        random_images(23), np.arange(23), batch_size=5, shuffle=True, augment=True
    )
    seen = torch.cat([y for _, y in batches.iterate(torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(23))
    assert seen.tolist() != list(range(23))


def batches_for(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = DeviceBatches(
        random_images(64), np.arange(64) % 10, batch_size=16, shuffle=True, augment=True
    )
    return list(batches.iterate(torch.Generator().manual_seed(seed)))


def test_same_seed_same_batches_different_seed_different_batches() -> None:
    first, again, other = batches_for(3), batches_for(3), batches_for(4)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first, other, strict=True))


def test_augmentation_is_a_shifted_crop_with_optional_flip() -> None:
    images = random_images(48, seed=5)
    batches = DeviceBatches(images, np.zeros(48, np.int64), batch_size=16, augment=True)
    xs = [x for x, _ in batches.iterate(torch.Generator().manual_seed(1))]
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in xs)
    out = np.concatenate([to_uint8(x) for x in xs])
    assert out.shape == images.shape
    assert (out != images).any()
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    found: set[tuple[int, int, bool]] = set()
    for i in range(len(images)):
        # Per-sample reference: exactly one (dy, dx, flip) must reproduce the output.
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(
                padded[i, dy : dy + 32, dx : dx + 32][:, :: -1 if flip else 1], out[i]
            )
        ]
        assert len(matches) == 1, f"sample {i}: {matches}"
        found.add(matches[0])
    assert len({(dy, dx) for dy, dx, _ in found}) > 10
    assert {flip for *_, flip in found} == {False, True}


def test_torch_inputs_and_bad_inputs() -> None:
    images = torch.from_numpy(random_images(6))
    batches = DeviceBatches(images, torch.arange(6, dtype=torch.int32), batch_size=6)
    (x, y), *_ = batches.iterate()
    assert y.dtype == torch.int64 and x.shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="pass iterate"):
        next(DeviceBatches(images, torch.arange(6), batch_size=2, shuffle=True).iterate())
    with pytest.raises(ValueError, match=r"uint8 N x 32 x 32 x 3 \(NHWC\)"):
        DeviceBatches(images.permute(0, 3, 1, 2), torch.arange(6), batch_size=2)
    with pytest.raises(ValueError, match="one label per image"):
        DeviceBatches(images, torch.arange(5), batch_size=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_batches_for_the_same_seed() -> None:
    images, labels = random_images(40, seed=9), np.arange(40)

    def run(device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches = DeviceBatches(
            images, labels, batch_size=16, device=device, shuffle=True, augment=True
        )
        return [(x.cpu(), y.cpu()) for x, y in batches.iterate(torch.Generator().manual_seed(2))]

    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(run("cpu"), run("cuda"), strict=True):
        torch.testing.assert_close(x_gpu, x_cpu)
        assert torch.equal(y_gpu, y_cpu)
