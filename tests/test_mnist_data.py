"""MNIST-family IDX reading: formats, every corruption as one line, the lookup order, offline."""

import contextlib
import gzip
from pathlib import Path

import numpy as np
import pytest

from keras_attn.data import mnist
from keras_attn.data.mnist import IMAGE_MAGIC, LABEL_MAGIC, load_mnist_family
from keras_attn.errors import UserError

STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(array, magic=None):
    array = np.asarray(array, np.uint8)
    if magic is None:
        magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    return np.array([magic, *array.shape], ">i4").tobytes() + array.tobytes()


def tiny_arrays(seed=0, n_train=12, n_test=5):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_set(folder, arrays, gz=("train_images", "test_labels")):
    """The four IDX files in `folder`, the parts in `gz` gzipped (named .gz), the rest plain."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, stem in STEMS.items():
        data = idx_bytes(arrays[part])
        path = folder / (stem + ".gz" if part in gz else stem)
        path.write_bytes(gzip.compress(data) if part in gz else data)
        paths[part] = path
    return paths


def assert_same(loaded, arrays):
    for part in STEMS:
        got = getattr(loaded, part)
        np.testing.assert_array_equal(got, arrays[part])
        assert got.dtype == np.uint8


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


@pytest.fixture
def no_sources(tmp_path, monkeypatch):
    """An empty Keras home and no Debian package, whatever this machine has installed."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no_debian")
    return tmp_path


def test_plain_and_gzipped_files_read_the_same(tmp_path):
    arrays = tiny_arrays()
    write_set(tmp_path / "a", arrays, gz=())
    write_set(tmp_path / "b", arrays, gz=tuple(STEMS))
    write_set(tmp_path / "c", arrays)  # mixed
    for folder in ("a", "b", "c"):
        loaded = load_mnist_family("mnist", tmp_path / folder)
        assert_same(loaded, arrays)
        assert loaded.source == str(tmp_path / folder)
        assert loaded.class_names == tuple("0123456789")
        assert loaded.train_images.flags.writeable


def test_gzip_is_told_by_its_bytes_not_its_name(tmp_path):
    arrays = tiny_arrays()
    paths = write_set(tmp_path, arrays, gz=())
    # gzipped content under a plain name, plain content under a .gz name
    paths["train_images"].write_bytes(gzip.compress(paths["train_images"].read_bytes()))
    plain = paths["test_labels"].read_bytes()
    paths["test_labels"].unlink()
    paths["test_labels"].with_name(STEMS["test_labels"] + ".gz").write_bytes(plain)
    assert_same(load_mnist_family("mnist", tmp_path), arrays)


def test_subfolder_of_data_dir_and_fashion_names(tmp_path):
    arrays = tiny_arrays(1)
    write_set(tmp_path / "mnist", arrays)
    assert load_mnist_family("mnist", tmp_path).source == str(tmp_path / "mnist")
    write_set(tmp_path / "fashion-mnist", arrays)  # the Keras cache's and Debian's spelling
    fashion = load_mnist_family("fashion_mnist", tmp_path)
    assert fashion.source == str(tmp_path / "fashion-mnist")
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert len(fashion.class_names) == 10


def _wrong_magic(paths, arrays):
    paths["train_images"].write_bytes(idx_bytes(arrays["train_images"], magic=LABEL_MAGIC))
    return "train_images", "magic 2049"


def _short_header(paths, arrays):
    paths["test_labels"].write_bytes(gzip.compress(b"\x00\x00\x08"))
    return "test_labels", "truncated"


def _truncated_body(paths, arrays):
    paths["train_labels"].write_bytes(idx_bytes(arrays["train_labels"])[:-1])
    return "train_labels", "header says 12 labels"


def _trailing_bytes(paths, arrays):
    paths["test_images"].write_bytes(idx_bytes(arrays["test_images"]) + b"\x00")
    return "test_images", "the file has 3921"


def _damaged_gzip(paths, arrays):
    data = paths["train_images"].read_bytes()
    paths["train_images"].write_bytes(data[: len(data) // 2])
    return "train_images", "gzip"


def _count_mismatch(paths, arrays):
    paths["train_labels"].write_bytes(idx_bytes(arrays["train_labels"][:-2]))
    return "train_labels", "12 images"


def _label_out_of_range(paths, arrays):
    labels = arrays["test_labels"].copy()
    labels[3] = 10
    paths["test_labels"].write_bytes(gzip.compress(idx_bytes(labels)))
    return "test_labels", "label 10 at index 3"


def _wrong_dims(paths, arrays):
    paths["test_images"].write_bytes(idx_bytes(arrays["test_images"][:, :27]))
    return "test_images", "27x28"


@pytest.mark.parametrize(
    "corrupt",
    [_wrong_magic, _short_header, _truncated_body, _trailing_bytes, _damaged_gzip,
     _count_mismatch, _label_out_of_range, _wrong_dims],
)  # fmt: skip
def test_every_corruption_is_one_line_naming_the_file(tmp_path, corrupt):
    arrays = tiny_arrays()
    paths = write_set(tmp_path, arrays)
    part, detail = corrupt(paths, arrays)
    message = one_line_error(load_mnist_family, "mnist", tmp_path)
    assert str(paths[part]) in message and detail in message


def test_incomplete_or_missing_data_dir(tmp_path, no_sources):
    paths = write_set(tmp_path / "part", tiny_arrays())
    paths["test_images"].unlink()
    message = one_line_error(load_mnist_family, "mnist", tmp_path / "part")
    assert "lacks t10k-images-idx3-ubyte" in message
    message = one_line_error(load_mnist_family, "mnist", tmp_path / "absent")
    assert "does not exist" in message
    (tmp_path / "empty").mkdir()
    message = one_line_error(load_mnist_family, "fashion_mnist", tmp_path / "empty")
    assert "--data-dir" in message and "apt-get install dataset-fashion-mnist" in message
    assert "t10k-labels-idx1-ubyte[.gz]" in message


def test_data_dir_is_the_only_place_looked_when_given(tmp_path, no_sources):
    cache = no_sources / "keras_home" / "datasets"
    write_npz(cache / "mnist.npz", tiny_arrays(2))
    (tmp_path / "mine").mkdir()
    one_line_error(load_mnist_family, "mnist", tmp_path / "mine")  # the cache is not used
    mine = tiny_arrays(3)
    write_set(tmp_path / "mine", mine)
    assert_same(load_mnist_family("mnist", tmp_path / "mine"), mine)


def write_npz(path, arrays, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, x_train=arrays["train_images"], y_train=arrays["train_labels"],
        x_test=arrays["test_images"], y_test=arrays["test_labels"], **extra,
    )  # fmt: skip


def test_mnist_from_the_keras_cache_npz(no_sources):
    arrays = tiny_arrays(4)
    npz = no_sources / "keras_home" / "datasets" / "mnist.npz"
    write_npz(npz, arrays)
    loaded = load_mnist_family("mnist")
    assert_same(loaded, arrays)
    assert loaded.source == str(npz)


@pytest.mark.parametrize("damage", ["garbage", "missing_key", "pickled", "bad_label"])
def test_a_bad_cache_npz_is_one_line_naming_it(no_sources, damage):
    arrays = tiny_arrays(5)
    npz = no_sources / "keras_home" / "datasets" / "mnist.npz"
    if damage == "garbage":
        npz.parent.mkdir(parents=True)
        npz.write_bytes(b"PK\x03\x04 not really a zip")
    elif damage == "missing_key":
        npz.parent.mkdir(parents=True)
        np.savez(npz, x_train=arrays["train_images"])
    elif damage == "pickled":  # an object array needs pickle: refused, never loaded
        write_npz(npz, {**arrays, "train_labels": np.array(list(range(12)), dtype=object)})
    else:
        arrays["train_labels"][0] = 11
        write_npz(npz, arrays)
    message = one_line_error(load_mnist_family, "mnist")
    assert str(npz) in message


def test_fashion_keras_cache_comes_before_the_debian_package(no_sources, monkeypatch):
    debian, cached = tiny_arrays(6), tiny_arrays(7)
    debian_dir = no_sources / "debian" / "fashion-mnist"
    write_set(debian_dir, debian, gz=tuple(STEMS))
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST_DIR", debian_dir)
    loaded = load_mnist_family("fashion_mnist")
    assert_same(loaded, debian)
    assert loaded.source == str(debian_dir)

    cache_dir = no_sources / "keras_home" / "datasets" / "fashion-mnist"
    paths = write_set(cache_dir, cached, gz=tuple(STEMS))
    loaded = load_mnist_family("fashion_mnist")
    assert_same(loaded, cached)
    assert loaded.source == str(cache_dir)

    paths["test_images"].unlink()  # a half-finished download: skipped, the package is used
    assert_same(load_mnist_family("fashion_mnist"), debian)


def test_offline_without_download_names_every_place_and_attempts_nothing(
    no_sources, monkeypatch, capsys
):
    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(mnist, "_download", no_network)
    monkeypatch.setattr(mnist.urllib.request, "urlopen", no_network)
    cache = no_sources / "keras_home" / "datasets"
    write_set(cache / "fashion-mnist", tiny_arrays())
    (cache / "fashion-mnist" / "train-labels-idx1-ubyte").unlink()

    message = one_line_error(load_mnist_family, "fashion_mnist")
    assert f"{cache / 'fashion-mnist'} (3 of 4 files)" in message
    assert str(no_sources / "no_debian") in message
    for way in ("--data-dir DIR", "apt-get install dataset-fashion-mnist", "pass --download"):
        assert way in message

    message = one_line_error(load_mnist_family, "mnist")
    assert str(cache / "mnist.npz") in message and "pass --download" in message
    assert "apt-get" not in message  # there is no Debian package of MNIST
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_failed_download_is_one_line_and_prints_nothing(no_sources, monkeypatch, capsys, name):
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # the discard port: refused at once
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    message = one_line_error(load_mnist_family, name, allow_download=True)
    assert message.startswith(f"could not download {name}")
    assert "--data-dir" in message
    assert capsys.readouterr() == ("", "")
    assert not (no_sources / "keras_home").exists()  # nothing half-downloaded left behind


@pytest.mark.parametrize("works", [True, False])
def test_keras_download_output_is_captured(no_sources, monkeypatch, capsys, works):
    import keras

    arrays = tiny_arrays(8)

    def load_data():
        print("Downloading data from https://storage.googleapis.com/...")
        if not works:
            raise Exception("URL fetch failure on https://storage.googleapis.com/...: None")
        return (arrays["train_images"], arrays["train_labels"]), (
            arrays["test_images"], arrays["test_labels"],
        )  # fmt: skip

    reachable = lambda *args, **kwargs: contextlib.nullcontext()  # noqa: E731
    monkeypatch.setattr(mnist.urllib.request, "urlopen", reachable)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", load_data)
    if works:
        loaded = load_mnist_family("fashion_mnist", allow_download=True)
        assert_same(loaded, arrays)
        assert loaded.source.endswith("fashion-mnist")
    else:
        assert "URL fetch failure" in one_line_error(
            load_mnist_family, "fashion_mnist", allow_download=True
        )
    assert capsys.readouterr() == ("", "")


def test_unknown_name():
    assert "fashion_mnist" in one_line_error(load_mnist_family, "cifar10")


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"real MNIST not at {REAL_MNIST}")
def test_real_mnist_class_counts():
    arrays = load_mnist_family("mnist", REAL_MNIST)
    assert arrays.train_images.shape == (60000, 28, 28)
    assert arrays.test_images.shape == (10000, 28, 28)
    assert np.bincount(arrays.train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(arrays.test_labels, minlength=10).tolist() == TEST_COUNTS
    assert abs(arrays.train_images.mean() / 255 - 0.1307) < 5e-4


@pytest.mark.skipif(
    not mnist.DEBIAN_FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist"
)
def test_real_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # so the package, not a cache, is read
    arrays = load_mnist_family("fashion_mnist")
    assert arrays.source == str(mnist.DEBIAN_FASHION_MNIST_DIR)
    assert np.bincount(arrays.train_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(arrays.test_labels, minlength=10).tolist() == [1000] * 10
