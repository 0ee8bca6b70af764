"""The loaders read real on-disk formats: each test writes small files and checks the arrays read back."""

import gzip
import json
import os
import pickle
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from benchmark import datasets
from benchmark.datasets import DATASETS, Dataset, load_dataset
from benchmark.errors import BenchmarkError

RNG = np.random.default_rng(7)


def raises(match: str) -> AbstractContextManager[pytest.ExceptionInfo[BenchmarkError]]:
    return pytest.raises(BenchmarkError, match=match)


def one_line(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# --- digits ---------------------------------------------------------------------------------------


def test_digits_shapes_ranges_and_split() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.n_classes == 10 and ds.writers is None
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0 and ds.x_test.max() <= 1.0
    assert set(ds.y_train) == set(ds.y_test) == set(range(10))
    # Stratified: each class is about a quarter test.
    assert np.all(np.abs(np.bincount(ds.y_test) / np.bincount(np.concatenate([ds.y_train, ds.y_test])) - 0.25) < 0.02)


def test_digits_is_a_partition_of_sklearn_digits() -> None:
    ds = load_dataset("digits")
    ours = np.concatenate([ds.x_train, ds.x_test]).reshape(-1, 64) * 16
    ours = np.column_stack([ours, np.concatenate([ds.y_train, ds.y_test])])
    bunch = load_digits()
    theirs = np.column_stack([bunch.data, bunch.target])
    assert np.array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])


def test_digits_is_deterministic_and_cached_read_only() -> None:
    first = load_dataset("digits")
    assert load_dataset("digits", root="/nonexistent") is first
    datasets._load_digits.cache_clear()
    fresh = load_dataset("digits")
    assert fresh is not first
    for a, b in zip((first.x_train, first.y_train, first.x_test), (fresh.x_train, fresh.y_train, fresh.x_test)):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        fresh.x_train[0, 0, 0, 0] = 0.5
    # The split is pinned (stratified, random_state=0): results stay comparable across versions.
    assert fresh.y_train[:12].tolist() == [7, 3, 6, 6, 7, 6, 7, 9, 2, 9, 0, 9]
    assert fresh.y_test[:12].tolist() == [2, 0, 4, 9, 4, 1, 2, 4, 6, 7, 9, 1]


# --- mnist / fashion-mnist (idx) ------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(root: Path, stem: str, array: np.ndarray, magic: int, gz: bool) -> Path:
    data = idx_bytes(array, magic)
    path = root / (stem + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_dataset(root: Path, gz: bool = False) -> dict[str, np.ndarray]:
    """3 train and 2 test images of 4x5 pixels (not square, to catch a transposition)."""
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (3, 4, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([7, 0, 9], dtype=np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (2, 4, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([3, 9], dtype=np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, :] = [0, 255, 1, 2, 3]
    for stem, array in arrays.items():
        write_idx(root, stem, array, 0x803 if "images" in stem else 0x801, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip(tmp_path: Path, name: str, gz: bool) -> None:
    arrays = write_idx_dataset(tmp_path, gz)
    ds = load_dataset(name, tmp_path)
    assert ds.name == name and ds.n_classes == 10 and ds.writers is None
    assert ds.x_train.shape == (3, 1, 4, 5) and ds.x_test.shape == (2, 1, 4, 5)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train[:, 0], arrays["train-images-idx3-ubyte"] / 255, rtol=1e-6)
    np.testing.assert_allclose(ds.x_test[:, 0], arrays["t10k-images-idx3-ubyte"] / 255, rtol=1e-6)
    np.testing.assert_allclose(ds.x_train[0, 0, 0], [0, 1, 1 / 255, 2 / 255, 3 / 255], rtol=1e-6)
    assert ds.y_train.tolist() == [7, 0, 9] and ds.y_test.tolist() == [3, 9]


def test_fashion_mnist_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_idx_dataset(tmp_path, gz=True)  # the Debian package ships the four files gzipped
    monkeypatch.setattr(datasets, "FASHION_MNIST_ROOT", tmp_path)
    assert load_dataset("fashion-mnist").y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    monkeypatch.setattr(datasets, "FASHION_MNIST_ROOT", tmp_path / "absent")
    with raises("dataset-fashion-mnist") as exc:
        load_dataset("fashion-mnist")
    assert "absent" in one_line(exc)


@pytest.mark.skipif(
    not (datasets.FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (`make test` installs it)",
)
def test_installed_fashion_mnist_is_the_real_data_set() -> None:
    data = load_dataset("fashion-mnist")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert np.array_equal(np.bincount(data.y_train), np.full(10, 6000))
    assert np.array_equal(np.bincount(data.y_test), np.full(10, 1000))


def test_idx_wrong_magic(tmp_path: Path) -> None:
    arrays = write_idx_dataset(tmp_path)
    write_idx(tmp_path, "train-images-idx3-ubyte", arrays["train-images-idx3-ubyte"], 0x801, gz=False)
    with raises(r"train-images-idx3-ubyte has bad magic number 0x00000801 \(expected 0x00000803\)") as exc:
        load_dataset("mnist", tmp_path)
    assert one_line(exc).startswith("mnist: ")


@pytest.mark.parametrize("cut", [1, 15, 100])
def test_idx_truncated(tmp_path: Path, cut: int) -> None:
    write_idx_dataset(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-cut])
    with raises("t10k-images-idx3-ubyte.*truncated") as exc:
        load_dataset("mnist", tmp_path)
    one_line(exc)


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-6])
    with raises("cannot read .*train-labels-idx1-ubyte.gz") as exc:
        load_dataset("mnist", tmp_path)
    one_line(exc)


def test_idx_trailing_bytes(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    with raises(r"train-labels-idx1-ubyte holds 4 data bytes but its header \(3,\) needs 3"):
        load_dataset("mnist", tmp_path)


def test_idx_missing_file(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with raises(r"missing file .*t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)") as exc:
        load_dataset("mnist", tmp_path)
    one_line(exc)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    write_idx(tmp_path, "train-labels-idx1-ubyte", np.array([1, 2]), 0x801, gz=False)
    with raises(r"train-labels-idx1-ubyte has labels of shape \(2,\) for 3 images"):
        load_dataset("mnist", tmp_path)


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    write_idx(tmp_path, "t10k-labels-idx1-ubyte", np.array([3, 10]), 0x801, gz=False)
    with raises(r"t10k-labels-idx1-ubyte has labels outside 0..9 \(found 3..10\)"):
        load_dataset("mnist", tmp_path)


def test_idx_train_test_image_sizes_differ(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path)
    write_idx(tmp_path, "t10k-images-idx3-ubyte", np.zeros((2, 5, 4)), 0x803, gz=False)
    with raises(r"train images are \(4, 5\) but test images are \(5, 4\)"):
        load_dataset("mnist", tmp_path)


def test_file_based_data_sets_need_a_root(tmp_path: Path) -> None:
    for name in ("mnist", "cifar10", "femnist"):
        with raises(f"data set '{name}' needs a root folder"):
            load_dataset(name)
        with raises(f"{name}: root .*nope is not a folder"):
            load_dataset(name, tmp_path / "nope")


def test_unknown_name() -> None:
    with raises(r"unknown data set 'svhn'; known: digits, mnist, fashion-mnist, cifar10, femnist") as exc:
        load_dataset("svhn")
    one_line(exc)
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10", "femnist")


# --- cifar10 (python pickle batches) --------------------------------------------------------------


def write_cifar(folder: Path, n_per_batch: int = 2) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Batches as the originals are: protocol-2 pickled dicts with bytes keys, data uint8 (N, 3072)."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = RNG.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(n_per_batch)]
        batches[name] = (data, labels)
        payload = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": []}
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    return batches


@pytest.mark.parametrize("use_parent", [False, True])
def test_cifar10_round_trip(tmp_path: Path, use_parent: bool) -> None:
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path if use_parent else tmp_path / "cifar-10-batches-py")
    assert ds.n_classes == 10 and ds.writers is None
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    train = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    np.testing.assert_allclose(ds.x_train.reshape(10, -1), train / 255, rtol=1e-6)
    np.testing.assert_allclose(ds.x_test.reshape(2, -1), batches["test_batch"][0] / 255, rtol=1e-6)
    # The 3072 bytes are the red plane, then green, then blue, each row-major.
    red_row1 = batches["data_batch_1"][0][0, 32:64] / 255
    blue_first = batches["data_batch_1"][0][0, 2048] / 255
    np.testing.assert_allclose(ds.x_train[0, 0, 1], red_row1, rtol=1e-6)
    assert ds.x_train[0, 2, 0, 0] == pytest.approx(blue_first)
    assert ds.y_train.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5] and ds.y_test.tolist() == [5, 6]


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_cifar10_reads_newer_pickle_protocols(tmp_path: Path, protocol: int) -> None:
    batches = write_cifar(tmp_path)
    data, labels = batches["test_batch"]
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=protocol))
    np.testing.assert_allclose(load_dataset("cifar10", tmp_path).x_test.reshape(2, -1), data / 255, rtol=1e-6)


def test_cifar10_missing_batch(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with raises("cifar10: missing file .*data_batch_4"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize("content", [b"not a pickle at all", b"\x80\x02}q\x00(U\x04data"])
def test_cifar10_corrupt_pickle(tmp_path: Path, content: bytes) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(content)
    with raises("cifar10: cannot unpickle .*data_batch_2") as exc:
        load_dataset("cifar10", tmp_path)
    one_line(exc)


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_cifar10_refuses_pickles_that_call_functions(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Payload(), b"labels": []}))
    with raises(r"cannot unpickle .*test_batch: UnpicklingError: refusing to load posix.getcwd"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_bad_contents(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path)
    data, labels = batches["data_batch_1"]
    cases = [
        ({b"data": data}, r"has no key b'labels'"),
        ([data, labels], r"holds a list, expected a dict"),
        ({b"data": data[:, :3000], b"labels": labels}, r"data is uint8 \(2, 3000\), expected uint8 \(N, 3072\)"),
        ({b"data": data, b"labels": labels[:1]}, r"has labels of shape \(1,\) for 2 images"),
        ({b"data": data, b"labels": [0, 10]}, r"has labels outside 0..9"),
        ({b"data": data, b"labels": [0.0, 1.0]}, r"labels are float64, expected integers"),
    ]
    for payload, message in cases:
        (tmp_path / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
        with raises(f"cifar10: .*data_batch_1.* {message}"):
            load_dataset("cifar10", tmp_path)


# --- femnist (LEAF json) --------------------------------------------------------------------------


def leaf_user(n: int, first_label: int) -> dict[str, list]:
    x = np.round(RNG.random((n, 784)), 3)
    x[:, 0] = 1.0  # LEAF's white background
    return {"x": x.tolist(), "y": [(first_label + j) % 62 for j in range(n)]}


def leaf_file(users: dict[str, dict[str, list]]) -> dict:
    return {"users": list(users), "num_samples": [len(u["y"]) for u in users.values()], "user_data": users}


def write_femnist(root: Path) -> dict[str, dict]:
    files = {
        "train/all_data_1_train.json": leaf_file({"f0002_31": leaf_user(2, 61), "f0000_14": leaf_user(1, 5)}),
        "train/all_data_0_train.json": leaf_file({"f0001_07": leaf_user(3, 10)}),
        "test/all_data_0_test.json": leaf_file({"f0001_07": leaf_user(1, 36), "f0002_31": leaf_user(1, 0)}),
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(content))
    return files


def test_femnist_round_trip(tmp_path: Path) -> None:
    files = write_femnist(tmp_path)
    ds = load_dataset("femnist", tmp_path)
    assert ds.n_classes == 62 and ds.name == "femnist"
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (2, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64 and ds.writers.dtype == np.int64
    # Files in sorted order, users in each file's "users" order; writers index the sorted writer ids.
    order = [
        ("train/all_data_0_train.json", "f0001_07"),
        ("train/all_data_1_train.json", "f0002_31"),
        ("train/all_data_1_train.json", "f0000_14"),
    ]
    x = np.concatenate([files[f]["user_data"][u]["x"] for f, u in order])
    y = np.concatenate([files[f]["user_data"][u]["y"] for f, u in order])
    np.testing.assert_allclose(ds.x_train.reshape(6, 784), x, rtol=1e-6)
    assert ds.y_train.tolist() == y.tolist() == [10, 11, 12, 61, 0, 5]
    assert ds.writers.tolist() == [1, 1, 1, 2, 2, 0]
    assert np.all(ds.x_train[:, 0, 0, 0] == 1.0)
    assert ds.y_test.tolist() == [36, 0]


def test_femnist_missing_key(tmp_path: Path) -> None:
    files = write_femnist(tmp_path)
    content = files["test/all_data_0_test.json"]
    del content["user_data"]
    (tmp_path / "test/all_data_0_test.json").write_text(json.dumps(content))
    with raises(r"femnist: .*all_data_0_test.json has no key 'user_data'") as exc:
        load_dataset("femnist", tmp_path)
    one_line(exc)


def test_femnist_bad_contents(tmp_path: Path) -> None:
    files = write_femnist(tmp_path)
    path = tmp_path / "train/all_data_0_train.json"
    good = files["train/all_data_0_train.json"]
    user = good["user_data"]["f0001_07"]

    def with_user(**changes: object) -> dict:
        return {**good, "user_data": {"f0001_07": {**user, **changes}}}

    cases = [
        ("{not json", r"cannot read .*all_data_0_train.json: JSONDecodeError"),
        (json.dumps({**good, "num_samples": [4]}), r"user 'f0001_07' has 3 samples, num_samples says 4"),
        (json.dumps({**good, "user_data": {}}), r"has no user_data for user 'f0001_07'"),
        (json.dumps(with_user(y=[1, 2, 62])), r"user 'f0001_07' has labels outside 0..61"),
        (json.dumps(with_user(y=[1, 2])), r"user 'f0001_07' has labels of shape \(2,\) for 3 images"),
        (json.dumps(with_user(y=[])), r"user 'f0001_07' has labels of shape \(0,\) for 3 images"),
        (json.dumps(with_user(y=[1.5, 2, 3])), r"user 'f0001_07' has non-integer labels"),
        (json.dumps(with_user(x=[r[:700] for r in user["x"]])), r"images have shape \(3, 700\), expected"),
        (json.dumps(with_user(x=[[2.0] * 784] * 3)), r"pixel values outside \[0, 1\]"),
        (json.dumps(with_user(x=[user["x"][0], user["x"][1][:5], user["x"][2]])), r"malformed user_data"),
        (json.dumps({**good, "user_data": {"f0001_07": {"y": user["y"]}}}), r"malformed user_data: KeyError"),
    ]
    for text, message in cases:
        path.write_text(text)
        with raises(f"femnist: .*{message}") as exc:
            load_dataset("femnist", tmp_path)
        assert str(path) in one_line(exc)


def test_femnist_needs_both_splits(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    for path in (tmp_path / "test").iterdir():
        path.unlink()
    with raises(r"femnist: no json files in .*test"):
        load_dataset("femnist", tmp_path)


def test_dataset_is_frozen() -> None:
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]
