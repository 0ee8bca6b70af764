"""Image data sets for the federated simulations, loaded from local files only (never downloaded).

Every loader returns float32 images of shape (N, C, H, W) in [0, 1] and int64 labels; any problem with
the files on disk becomes a one-line BenchmarkError that names the file.
"""

import functools
import gzip
import json
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchmark.catalog import DATASETS
from benchmark.errors import BenchmarkError


# Where Debian's `dataset-fashion-mnist` package installs the four gzipped idx files.
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_FEMNIST_CLASSES = 62
_FEMNIST_SIDE = 28


@dataclass(frozen=True)
class Dataset:
    """A train/test split; `writers` gives each training sample's writer (FEMNIST only)."""

    name: str
    x_train: np.ndarray  # float32 (N, C, H, W) in [0, 1]
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    writers: np.ndarray | None = None  # int64 (N,), writer ids 0..U-1 in sorted order of the LEAF ids


def load_dataset(name: str, root: str | os.PathLike | None = None) -> Dataset:
    """Load `name` (one of DATASETS) from `root`; "digits" is bundled with scikit-learn and ignores `root`."""
    if name == "digits":
        return _load_digits()
    folder = _data_folder(name, root)
    if name in ("mnist", "fashion-mnist"):
        return _load_idx_pair(name, folder)
    if name == "cifar10":
        return _load_cifar10(folder)
    return _load_femnist(folder)


def _data_folder(name: str, root: str | os.PathLike | None) -> Path:
    """The folder `name`'s files are read from (`root`; Debian's package by default for Fashion-MNIST)."""
    if name not in DATASETS:
        raise BenchmarkError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if root is None and name != "fashion-mnist":
        raise BenchmarkError(f"data set {name!r} needs a root folder holding its files")
    folder = Path(root) if root is not None else FASHION_MNIST_ROOT
    if not folder.is_dir():
        hint = " (install Debian's dataset-fashion-mnist or pass a root)" if name == "fashion-mnist" else ""
        raise BenchmarkError(f"{name}: root {folder} is not a folder{hint}")
    return folder


def _cifar_folder(root: Path) -> Path:
    """`root` is cifar-10-batches-py itself or the folder that holds it."""
    if not (root / "data_batch_1").exists() and (root / "cifar-10-batches-py").is_dir():
        return root / "cifar-10-batches-py"
    return root


def check_dataset(name: str, root: str | os.PathLike | None = None) -> None:
    """BenchmarkError, before any task runs, where `name` cannot be loaded from `root`: files missing, idx headers
    with the wrong magic number, a CIFAR-10 test batch that does not unpickle, FEMNIST splits without json files.
    Cheaper than load_dataset (headers and the smallest file only); the rest is checked when a task loads it."""
    if name == "digits":
        return
    folder = _data_folder(name, root)
    if name in ("mnist", "fashion-mnist"):
        for prefix in ("train", "t10k"):
            for kind, magic in (("images-idx3", _IDX_IMAGES_MAGIC), ("labels-idx1", _IDX_LABELS_MAGIC)):
                path = _find_idx(name, folder, f"{prefix}-{kind}-ubyte")
                try:
                    with (gzip.open(path) if path.suffix == ".gz" else path.open("rb")) as stream:
                        found = int.from_bytes(stream.read(4), "big")
                except (OSError, EOFError, zlib.error) as exc:
                    raise BenchmarkError(f"{name}: cannot read {path}: {exc}") from exc
                if found != magic:
                    raise BenchmarkError(f"{name}: {path} has bad magic number 0x{found:08x} (expected 0x{magic:08x})")
    elif name == "cifar10":
        folder = _cifar_folder(folder)
        for batch in [f"data_batch_{i}" for i in range(1, 6)]:
            if not (folder / batch).is_file():
                raise BenchmarkError(f"cifar10: missing file {folder / batch}")
        _load_cifar_batch(folder / "test_batch")
    else:
        for split in ("train", "test"):
            if not any((folder / split).glob("*.json")):
                raise BenchmarkError(f"femnist: no json files in {folder / split}")


@functools.lru_cache(maxsize=1)
def _load_digits() -> Dataset:
    """The cached arrays are made read-only so that one caller cannot corrupt them for the next."""
    from sklearn.datasets import load_digits  # scikit-learn is slow to import; only digits needs it
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    arrays = [np.ascontiguousarray(a) for a in (x_train, y_train, x_test, y_test)]
    for a in arrays:
        a.flags.writeable = False
    return Dataset("digits", *arrays, n_classes=10)


def _read_bytes(name: str, path: Path) -> bytes:
    """The file's contents, gunzipped when its name ends in .gz."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, zlib.error) as exc:
        raise BenchmarkError(f"{name}: cannot read {path}: {exc}") from exc


def _find_idx(name: str, root: Path, stem: str) -> Path:
    for path in (root / stem, root / f"{stem}.gz"):
        if path.is_file():
            return path
    raise BenchmarkError(f"{name}: missing file {root / stem} (or {stem}.gz)")


def _parse_idx(name: str, path: Path, magic: int) -> np.ndarray:
    """An idx file as a uint8 array: 4-byte magic, one big-endian uint32 per dimension, then the bytes."""
    data = _read_bytes(name, path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) >= 4 and (found := int.from_bytes(data[:4], "big")) != magic:
        raise BenchmarkError(f"{name}: {path} has bad magic number 0x{found:08x} (expected 0x{magic:08x})")
    if len(data) < header:
        raise BenchmarkError(f"{name}: {path} is truncated: {len(data)} bytes, shorter than the idx header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise BenchmarkError(
            f"{name}: {path} holds {len(data) - header} data bytes but its header {shape} needs {expected}"
            + (" (truncated)" if len(data) - header < expected else "")
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _check_labels(name: str, where: object, labels: np.ndarray, n_images: int, n_classes: int) -> np.ndarray:
    if labels.shape != (n_images,):
        raise BenchmarkError(f"{name}: {where} has labels of shape {labels.shape} for {n_images} images")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise BenchmarkError(
            f"{name}: {where} has labels outside 0..{n_classes - 1} (found {labels.min()}..{labels.max()})"
        )
    return labels.astype(np.int64)


def _load_idx_split(name: str, root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find_idx(name, root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(name, root, f"{prefix}-labels-idx1-ubyte")
    images = _parse_idx(name, images_path, _IDX_IMAGES_MAGIC)
    labels = _parse_idx(name, labels_path, _IDX_LABELS_MAGIC)
    labels = _check_labels(name, labels_path, labels, images.shape[0], 10)
    return (images[:, None, :, :] / np.float32(255)).astype(np.float32), labels


def _load_idx_pair(name: str, root: Path) -> Dataset:
    """MNIST and Fashion-MNIST: the same four idx file names (the Debian package ships them gzipped)."""
    x_train, y_train = _load_idx_split(name, root, "train")
    x_test, y_test = _load_idx_split(name, root, "t10k")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise BenchmarkError(
            f"{name}: train images are {x_train.shape[2:]} but test images are {x_test.shape[2:]} in {root}"
        )
    return Dataset(name, x_train, y_train, x_test, y_test, n_classes=10)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a pickle from disk could otherwise run any code."""

    _LEGACY = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core.numeric": "numpy._core.numeric"}
    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        module = self._LEGACY.get(module, module)
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise BenchmarkError(f"cifar10: missing file {path}")
    try:
        with path.open("rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle can raise nearly anything (EOFError, KeyError, ...)
        raise BenchmarkError(f"cifar10: cannot unpickle {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(batch, dict):
        raise BenchmarkError(f"cifar10: {path} holds a {type(batch).__name__}, expected a dict")
    for key in (b"data", b"labels"):
        if key not in batch:
            raise BenchmarkError(f"cifar10: {path} has no key {key!r}")
    try:
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except ValueError as exc:
        raise BenchmarkError(f"cifar10: {path} has malformed data or labels: {exc}") from exc
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise BenchmarkError(f"cifar10: {path} data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.dtype.kind not in "iu":
        raise BenchmarkError(f"cifar10: {path} labels are {labels.dtype}, expected integers")
    labels = _check_labels("cifar10", path, labels, data.shape[0], 10)
    return (data.reshape(-1, 3, 32, 32) / np.float32(255)).astype(np.float32), labels


def _load_cifar10(root: Path) -> Dataset:
    root = _cifar_folder(root)
    train = [_load_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _load_cifar_batch(root / "test_batch")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return Dataset("cifar10", x_train, y_train, x_test, y_test, n_classes=10)


def _femnist_user(path: Path, user: str, record: object) -> tuple[np.ndarray, np.ndarray]:
    """One writer's images (n, 1, 28, 28) and labels, validated."""
    where = f"{path} user {user!r}"
    try:
        x = np.asarray(record["x"], dtype=np.float32)
        y = np.asarray(record["y"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchmarkError(f"femnist: {where} has malformed user_data: {type(exc).__name__}: {exc}") from exc
    if x.size == 0 and y.size == 0:
        return np.empty((0, 1, _FEMNIST_SIDE, _FEMNIST_SIDE), np.float32), np.empty(0, np.int64)
    if x.ndim != 2 or x.shape[1] != _FEMNIST_SIDE**2:
        raise BenchmarkError(f"femnist: {where} images have shape {x.shape}, expected (n, 784)")
    if y.size and y.dtype.kind not in "iu":
        raise BenchmarkError(f"femnist: {where} has non-integer labels ({y.dtype})")
    if not np.all((x >= 0) & (x <= 1)):
        raise BenchmarkError(f"femnist: {where} has pixel values outside [0, 1]")
    y = _check_labels("femnist", where, y, x.shape[0], _FEMNIST_CLASSES)
    return x.reshape(-1, 1, _FEMNIST_SIDE, _FEMNIST_SIDE), y


def _load_femnist_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All samples of `root/split/*.json` in file order then LEAF user order, and each sample's writer id."""
    files = sorted((root / split).glob("*.json"))
    if not files:
        raise BenchmarkError(f"femnist: no json files in {root / split}")
    xs, ys, owners = [], [], []
    for path in files:
        try:
            with path.open(encoding="utf-8") as f:
                content = json.load(f)
            users, num_samples, user_data = content["users"], content["num_samples"], content["user_data"]
        except KeyError as exc:
            raise BenchmarkError(f"femnist: {path} has no key {exc.args[0]!r}") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise BenchmarkError(f"femnist: cannot read {path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(users, list) or not isinstance(num_samples, list) or len(users) != len(num_samples):
            raise BenchmarkError(f"femnist: {path} 'users' and 'num_samples' are not lists of the same length")
        if not all(isinstance(user, str) for user in users):
            raise BenchmarkError(f"femnist: {path} 'users' holds non-string writer ids")
        if not isinstance(user_data, dict):
            raise BenchmarkError(f"femnist: {path} 'user_data' is not an object")
        for user, count in zip(users, num_samples):
            if user not in user_data:
                raise BenchmarkError(f"femnist: {path} has no user_data for user {user!r}")
            x, y = _femnist_user(path, user, user_data[user])
            if count != len(y):
                raise BenchmarkError(f"femnist: {path} user {user!r} has {len(y)} samples, num_samples says {count}")
            xs.append(x)
            ys.append(y)
            owners.extend([user] * len(y))
    return np.concatenate(xs), np.concatenate(ys), owners


def _load_femnist(root: Path) -> Dataset:
    """LEAF's FEMNIST json, values kept as stored (1.0 is the white background)."""
    x_train, y_train, owners = _load_femnist_split(root, "train")
    x_test, y_test, _ = _load_femnist_split(root, "test")
    ids = {user: i for i, user in enumerate(sorted(set(owners)))}
    writers = np.fromiter((ids[u] for u in owners), dtype=np.int64, count=len(owners))
    return Dataset("femnist", x_train, y_train, x_test, y_test, n_classes=_FEMNIST_CLASSES, writers=writers)
