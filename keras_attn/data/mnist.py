"""MNIST and Fashion-MNIST from their IDX files, found locally; downloaded only when allowed.

    arrays = load_mnist_family("mnist", data_dir="../shared/data/mnist")
    arrays.train_images  # (60000, 28, 28) uint8
    arrays.train_labels  # (60000,) uint8, 0..9
    arrays.test_images   # (10000, 28, 28) uint8
    arrays.test_labels   # (10000,) uint8
    arrays.class_names   # ("0", ..., "9") or Fashion-MNIST's ten names
    arrays.source        # the folder or file the arrays came from

Looked up in this order, the first complete set wins:

1. `data_dir`, when given, and nothing else: the four IDX files in it or in its
   `<name>/` sub-folder (for Fashion-MNIST also `fashion-mnist/`, the spelling of the
   Keras cache and of the Debian package).
2. The Keras cache, `$KERAS_HOME/datasets` (default `~/.keras/datasets`): `mnist.npz`
   (x_train, y_train, x_test, y_test) for MNIST; the four IDX files in `fashion-mnist/`
   for Fashion-MNIST. These are where `keras.datasets` puts its downloads.
3. Fashion-MNIST only: `/usr/share/datasets/fashion-mnist/`, from the Debian package
   (`apt-get install dataset-fashion-mnist`), which holds the four `.gz` IDX files.
4. `keras.datasets.<name>.load_data()`, a download, only with `allow_download=True`.

The IDX files are `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each plain or gzipped (told by its
first bytes, not its name). Every file is checked before use: magic number (2051 images,
2049 labels), a header whose counts match the bytes that follow, 28x28 images, as many
labels as images, labels in 0..9. Any failure is a one-line `UserError` naming the file,
and so is finding nothing: the message lists every place looked and how to get the files.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_attn.errors import UserError

log = logging.getLogger(__name__)

NAMES = ("mnist", "fashion_mnist")
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CLASS_NAMES = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}

# Where `apt-get install dataset-fashion-mnist` puts the four .gz files (a module constant,
# so tests can point it elsewhere).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# Keras downloads from here; only its reachability is checked (see `_download`).
_KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_REACH_TIMEOUT_S = 15

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_SIDE = 28

# part -> (file name stem, magic). Some archives spell the stem with a dot before "idx".
_PARTS = {
    "train_images": ("train-images-idx3-ubyte", IMAGE_MAGIC),
    "train_labels": ("train-labels-idx1-ubyte", LABEL_MAGIC),
    "test_images": ("t10k-images-idx3-ubyte", IMAGE_MAGIC),
    "test_labels": ("t10k-labels-idx1-ubyte", LABEL_MAGIC),
}
_IDX_FILES = ", ".join(f"{stem}[.gz]" for stem, _ in _PARTS.values())


@dataclass(frozen=True, eq=False)
class MnistArrays:
    """One MNIST-family data set in memory.

    Attributes:
        train_images: (N_train, 28, 28) uint8, 0..255 (60000 for the real sets).
        train_labels: (N_train,) uint8, 0..9.
        test_images: (N_test, 28, 28) uint8 (10000 for the real sets).
        test_labels: (N_test,) uint8, 0..9.
        source: the folder (IDX files) or file (`mnist.npz`) read, or the download.
        class_names: ten names, index = label.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    class_names: tuple[str, ...]


def keras_datasets_dir() -> Path:
    """`$KERAS_HOME/datasets`, else `~/.keras/datasets`: the same rule as Keras' own cache."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]) / "datasets"
    home = Path(os.path.expanduser("~"))
    # Keras falls back to /tmp when the home folder is read-only; so do we, to find its files.
    base = home if os.access(home, os.W_OK) else Path("/tmp")
    return base / ".keras" / "datasets"


def load_mnist_family(
    name: str, data_dir: str | os.PathLike | None = None, allow_download: bool = False
) -> MnistArrays:
    """MNIST or Fashion-MNIST from the first place that has it (order: module docstring).

    Args:
        name: "mnist" or "fashion_mnist".
        data_dir: a folder holding the four IDX files (or a `<name>/` sub-folder that does);
            when given, no other place is tried.
        allow_download: as a last resort, let `keras.datasets` download the set. Off by
            default, so nothing reaches the network unless the user asked for it.

    Raises:
        UserError: one line, when nothing is found, a file is corrupt, or the download fails.
    """
    if name not in NAMES:
        raise UserError(f"unknown MNIST-family data set {name!r}; choose one of {', '.join(NAMES)}")
    if data_dir is not None:
        return _from_data_dir(name, Path(data_dir))

    looked: list[str] = []
    cache = keras_datasets_dir()
    if name == "mnist":
        npz = cache / "mnist.npz"
        if npz.is_file():
            return _read_npz(npz, name)
        looked.append(str(npz))
        folders = []
    else:
        folders = [cache / "fashion-mnist", DEBIAN_FASHION_MNIST_DIR]
    for folder in folders:
        files, missing = _find_idx_files(folder)
        if not missing:
            return _read_idx_folder(folder, files, name)
        # A half-finished Keras download leaves some of the four: say so, and go on.
        looked.append(f"{folder} ({4 - len(missing)} of 4 files)" if files else str(folder))
    if allow_download:
        return _download(name)
    raise UserError(f"{name} not found in {', '.join(looked)}; {_how_to_get(name)}")


def _how_to_get(name: str, download: bool = True) -> str:
    ways = [f"pass --data-dir DIR holding the four IDX files ({_IDX_FILES})"]
    if name == "fashion_mnist":
        ways.append(f"apt-get install dataset-fashion-mnist (into {DEBIAN_FASHION_MNIST_DIR})")
    if download:
        ways.append(f"pass --download to let keras.datasets.{name} fetch it (needs network)")
    return ", or ".join(ways)


def _from_data_dir(name: str, data_dir: Path) -> MnistArrays:
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise UserError(f"{name} data directory {data_dir} {what}")
    subfolders = [name] + (["fashion-mnist"] if name == "fashion_mnist" else [])
    candidates = [data_dir] + [data_dir / sub for sub in subfolders]
    for folder in candidates:
        files, missing = _find_idx_files(folder)
        if not missing:
            return _read_idx_folder(folder, files, name)
        if files:  # the user pointed here: name what is missing rather than look further
            raise UserError(
                f"{folder} lacks {', '.join(f'{m}[.gz]' for m in missing)} "
                f"(has {', '.join(p.name for p in files.values())})"
            )
    where = " or ".join(str(f) for f in candidates if f.is_dir())
    raise UserError(f"no {name} IDX files in {where}; {_how_to_get(name, download=False)}")


def _find_idx_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """(part -> file found, stems of the parts not found) in `folder`."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for part, (stem, _) in _PARTS.items():
        names = [stem, stem + ".gz"]
        dotted = stem.replace("-idx", ".idx")
        names += [dotted, dotted + ".gz"]
        path = next((folder / n for n in names if (folder / n).is_file()), None)
        if path is None:
            missing.append(stem)
        else:
            found[part] = path
    return found, missing


def _read_idx_folder(folder: Path, files: dict[str, Path], name: str) -> MnistArrays:
    arrays = {part: read_idx(path, _PARTS[part][1]) for part, path in files.items()}
    for split in ("train", "test"):
        _check_split(
            arrays[f"{split}_images"], arrays[f"{split}_labels"],
            str(files[f"{split}_images"]), str(files[f"{split}_labels"]),
        )  # fmt: skip
    log.info("%s read from %s", name, folder)
    return MnistArrays(**arrays, source=str(folder), class_names=CLASS_NAMES[name])


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """One IDX file of unsigned bytes as a writable array: images (N, rows, cols), labels (N,).

    `magic` is `IMAGE_MAGIC` (2051) or `LABEL_MAGIC` (2049). Gzip is recognised by its first
    two bytes, so a `.gz` name that was unpacked in place still reads.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # truncated or damaged archive
            raise UserError(f"{path}: damaged gzip data ({_one_line(err)})") from None
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    kind = "image" if magic == IMAGE_MAGIC else "label"
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX {kind} file ({len(raw)} bytes, header is {header})")
    found, *dims = (int(v) for v in np.frombuffer(raw, ">i4", count=1 + ndim))
    if found != magic:
        raise UserError(f"{path}: not an IDX {kind} file (magic {found}, expected {magic})")
    expected = int(np.prod(dims))
    body = len(raw) - header
    if body != expected:
        count = f"{dims[0]} {kind}s" + (f" of {dims[1]}x{dims[2]}" if kind == "image" else "")
        raise UserError(
            f"{path}: header says {count} = {expected} bytes of data, the file has {body}"
        )
    if kind == "image" and dims[1:] != [_SIDE, _SIDE]:
        raise UserError(f"{path}: images are {dims[1]}x{dims[2]}, expected {_SIDE}x{_SIDE}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def _check_split(images, labels, images_name: str, labels_name: str) -> None:
    """Shapes, dtypes and label range of one split; `UserError` naming the file otherwise."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE):
        raise UserError(f"{images_name}: images have shape {images.shape}, expected (N, 28, 28)")
    if images.dtype != np.uint8:
        raise UserError(f"{images_name}: images are {images.dtype}, expected uint8")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{labels_name}: labels are {labels.dtype}{labels.shape}, expected (N,) int"
        )
    if len(images) != len(labels):
        raise UserError(
            f"{images_name} has {len(images)} images but {labels_name} has {len(labels)} labels"
        )
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise UserError(
            f"{labels_name}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside 0..9 "
            f"({bad.size} out of range in all)"
        )


def _read_npz(path: Path, name: str) -> MnistArrays:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as f:  # never unpickle a file found on disk
            absent = [k for k in keys if k not in f.files]
            if absent:
                raise UserError(f"{path}: no {', '.join(absent)} in it (needs {', '.join(keys)})")
            x_train, y_train, x_test, y_test = (f[k] for k in keys)
    except UserError:
        raise
    except Exception as err:  # zip, zlib, format and pickle refusals: all mean "unreadable"
        raise UserError(
            f"{path}: not a readable .npz file ({_one_line(err)}); delete it or pass --data-dir"
        ) from None
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        _check_split(x, y, f"{path}[x_{split}]", f"{path}[y_{split}]")
    log.info("%s read from %s", name, path)
    return MnistArrays(
        x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8),
        source=str(path), class_names=CLASS_NAMES[name],
    )  # fmt: skip


def _download(name: str) -> MnistArrays:
    """`keras.datasets.<name>.load_data()`, failing in one line and printing nothing.

    The origin is probed first (urllib honours the `https_proxy` settings Keras' download
    uses), with a timeout: Keras' own fetch has none and prints "Downloading data from ..."
    before it fails. Its progress output is captured, so a CLI's output stays its own.
    """
    origin = _KERAS_ORIGIN + ("mnist.npz" if name == "mnist" else "train-labels-idx1-ubyte.gz")
    try:
        request = urllib.request.Request(origin, method="HEAD")
        with urllib.request.urlopen(request, timeout=_REACH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered, so the network works: Keras' fetch reports what follows
    except Exception as err:  # URLError (no route, DNS, proxy refused), timeouts
        raise UserError(
            f"could not download {name}: {origin} unreachable "
            f"({_one_line(getattr(err, 'reason', err))}); "
            f"{_how_to_get(name, download=False)}"
        ) from None
    import keras  # only here: the rest of this module does not need it

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as err:
        raise UserError(
            f"could not download {name} ({_one_line(err)}); {_how_to_get(name, download=False)}"
        ) from None
    where = keras_datasets_dir() / ("mnist.npz" if name == "mnist" else "fashion-mnist")
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        _check_split(x, y, f"{where} x_{split}", f"{where} y_{split}")
    log.info("%s downloaded into %s", name, where)
    return MnistArrays(
        x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8),
        source=str(where), class_names=CLASS_NAMES[name],
    )  # fmt: skip


def _one_line(err: object) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]
