"""Image classification data: class folders, CIFAR-10/100, the MNIST family (plain and
cluttered) or the synthetic shapes set.

`load_image_data` returns an `ImageData` (class names, images or paths, labels);
`train_dataset` / `val_dataset` / `test_dataset` / `steps_per_epoch` (from
`image_pipeline`, re-exported here) turn it into `tf.data` pipelines yielding
`(float32 (B, S, S, 3) RGB in [0, 255], int32 (B,))`. Normalisation belongs to the model.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_attn.data import image_files, synthetic_images
from keras_attn.data.cluttered import load_cluttered
from keras_attn.data.image_pipeline import (  # noqa: F401  (part of this module's API)
    augment_image,
    steps_per_epoch,
    test_dataset,
    train_dataset,
    val_dataset,
)
from keras_attn.data.mnist import load_mnist_family
from keras_attn.errors import UserError

MNIST_SOURCES = ("mnist", "fashion_mnist", "cluttered_mnist", "cluttered_fashion_mnist")
SOURCES = ("synthetic", "folder", "cifar10", "cifar100", *MNIST_SOURCES)
DEFAULT_FOLDER_SIZE = 128
SYNTHETIC_PER_CLASS = 400  # training images per class the synthetic set generates by default

CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()  # noqa: SIM905
CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()  # noqa: SIM905


@dataclass
class ImageData:
    """A train/val/test image classification set, held in memory or streamed from files.

    Exactly one of `train_images` (uint8 (N, H, W, 3), or (N, H, W) grey, normally
    H = W = image_size; other sizes are resized in the pipelines) and `train_paths`
    (str (N,)) is set; likewise for val and, when the source has a test split, for test.
    Labels are int32 indices into `class_names`. Boxes, where the source knows where its
    target is, are float32 (N, 4) `(y0, x0, y1, x1)` as fractions of the side.
    """

    class_names: list[str]
    train_images: np.ndarray | None
    train_paths: np.ndarray | None
    train_labels: np.ndarray
    val_images: np.ndarray | None
    val_paths: np.ndarray | None
    val_labels: np.ndarray
    image_size: int
    augment: str
    skipped_files: list[dict] = field(default_factory=list)
    val_boxes: np.ndarray | None = None
    source: str = "folder"
    memory_limit_gb: float = 4.0
    test_images: np.ndarray | None = None
    test_paths: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    test_boxes: np.ndarray | None = None
    origin: str = ""  # where the files were found

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def num_val(self) -> int:
        return len(self.val_labels)

    @property
    def num_test(self) -> int:
        return 0 if self.test_labels is None else len(self.test_labels)

    def summary_line(self) -> str:
        where = f" from {self.origin}" if self.origin else ""
        return (
            f"{self.source}{where}: {self.num_classes} classes, {self.num_train} train / "
            f"{self.num_val} val / {self.num_test} test images at "
            f"{self.image_size}x{self.image_size}, "
            f"{len(self.skipped_files)} unreadable files skipped"
        )


@dataclass(frozen=True)
class Clutter:
    """How the cluttered MNIST-family sources are made (Mnih et al. 2014)."""

    canvas: int = 60
    distractors: int = 4
    distractor_size: int = 8


def load_image_data(
    source: str,
    data_dir: str | None,
    image_size: int | None,
    seed: int,
    val_fraction: float = 0.2,
    train_per_class: int | None = None,
    clutter: Clutter = Clutter(),
    allow_download: bool = False,
    memory_limit_gb: float = 4.0,
    **synthetic_options,
) -> ImageData:
    """Load `source` (one of `SOURCES`) with train, val and (where it has one) test splits.

    The official test set of the MNIST family and CIFAR is the test split, and validation
    is carved from the training set (`val_fraction` per class, by `seed`). folder:
    `data_dir/<class>/*`, or `data_dir/train/<class>/*` with `val/` and `test/` when present
    (without `val/`, validation is carved from train). synthetic: generated under
    `data_dir` (default data/synthetic) with its own val and test splits;
    `synthetic_options` are `num_classes`, `val_per_class`, `test_per_class`,
    `synthetic_seed`. `train_per_class` keeps that many training images per class (chosen
    by `seed`; for synthetic: how many to generate, default 400); val and test stay whole.
    Unreadable files are skipped, logged and listed. Decoded images are kept in memory when
    they fit `memory_limit_gb`, else streamed.
    """
    if image_size is not None and image_size < 8:
        raise UserError(f"image size must be at least 8 pixels, got {image_size}")
    if train_per_class is not None and train_per_class < 1:
        raise UserError(f"--train-per-class must be at least 1, got {train_per_class}")
    image_size = image_size or default_image_size(source, clutter.canvas)
    if source == "synthetic":
        return _load_synthetic(
            data_dir,
            image_size,
            seed,
            memory_limit_gb,
            train_per_class or 400,
            **synthetic_options,
        )
    if source == "folder":
        data = _load_folder(data_dir, image_size, seed, val_fraction, memory_limit_gb)[0]
    elif source in ("cifar10", "cifar100"):
        data = _load_cifar(source, image_size, seed, val_fraction, memory_limit_gb)
    elif source in MNIST_SOURCES:
        data = _load_mnist(
            source, data_dir, image_size, seed, val_fraction, clutter, allow_download
        )
    else:
        raise UserError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")
    return keep_per_class(data, train_per_class, seed) if train_per_class else data


def default_image_size(source: str, canvas: int = Clutter.canvas) -> int | None:
    """The side `load_image_data` gives `source`'s images when no size is asked for (None
    for an unknown source): known without loading anything, so a run's resolved config is
    too."""
    if source.startswith("cluttered_"):
        return canvas
    sizes = {"synthetic": 64, "folder": DEFAULT_FOLDER_SIZE, "cifar10": 32, "cifar100": 32}
    return sizes.get(source, 28 if source in MNIST_SOURCES else None)


def keep_per_class(data: ImageData, count: int, seed: int) -> ImageData:
    """`data` with at most `count` training images per class, the same ones for a given
    `seed` whatever the model; val and test are untouched."""
    rng = np.random.default_rng([seed, 1])  # not the stream that carved validation
    keep = np.sort(
        np.concatenate(
            [
                rng.permutation(np.flatnonzero(data.train_labels == c))[:count]
                for c in range(data.num_classes)
            ]
        )
    )
    return replace(
        data,
        train_images=None if data.train_images is None else data.train_images[keep],
        train_paths=None if data.train_paths is None else data.train_paths[keep],
        train_labels=data.train_labels[keep],
    )


def _carve_validation(images, labels, val_fraction: float, seed: int, boxes=None):
    """`(train, val)` parts of an in-memory training set, `val_fraction` of each class."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    train, val = image_files.stratified_split(labels, val_fraction, seed)
    part = (lambda pos: None) if boxes is None else (lambda pos: boxes[pos])
    return (images[train], labels[train], part(train)), (images[val], labels[val], part(val))


def _load_folder(
    data_dir: str | None,
    size: int,
    seed: int,
    val_fraction: float,
    memory_limit_gb: float,
    source: str = "folder",
) -> tuple[ImageData, dict[str, np.ndarray]]:
    """The folder's ImageData and each split's file paths (also when held in memory)."""
    root = image_files.check_folder(data_dir)
    train_root = root / "train" if (root / "train").is_dir() else root
    parts = {"train": train_root}
    if train_root != root:
        parts.update({s: root / s for s in ("val", "test") if (root / s).is_dir()})
    class_names = image_files.class_folders(train_root)
    if not class_names:
        raise UserError(f"no class sub-folders in {train_root} (expected {train_root}/<class>/*)")
    if "val" not in parts and not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    paths, labels, part_of = [], [], []
    for part_id, folder in enumerate(parts.values()):
        unknown = sorted(set(image_files.class_folders(folder)) - set(class_names))
        if unknown:
            raise UserError(f"classes in {folder} not in {train_root}: {', '.join(unknown)}")
        found, found_labels = image_files.scan(folder, class_names)
        paths, labels = paths + found, labels + found_labels
        part_of += [part_id] * len(found)
    if not paths:
        exts = " ".join(image_files.IMAGE_EXTENSIONS)
        raise UserError(f"no images ({exts}) found under {root}")
    if len(class_names) < 2:
        raise UserError(f"need at least 2 classes, found 1 ({class_names[0]}) in {train_root}")

    keep = image_files.fits_in_memory(len(paths), size, memory_limit_gb)
    ok, images, skipped = image_files.decode_files(paths, size, keep)
    all_paths, all_labels = np.asarray(paths, dtype=str), np.asarray(labels, np.int32)
    part_ok = np.asarray(part_of, np.int32)[ok]
    split_ids = {split: i for i, split in enumerate(parts)}
    positions = {split: np.flatnonzero(part_ok == i) for split, i in split_ids.items()}
    if "val" not in parts:
        train_pos, val_pos = image_files.stratified_split(
            all_labels[ok[positions["train"]]], val_fraction, seed
        )
        positions["train"], positions["val"] = (
            positions["train"][train_pos],
            positions["train"][val_pos],
        )
    train_labels = all_labels[ok[positions["train"]]]
    counts = np.bincount(train_labels, minlength=len(class_names))
    if (counts == 0).any():
        name = class_names[int(np.argmin(counts))]
        extra = f" ({len(skipped)} unreadable files skipped)" if skipped else ""
        raise UserError(f"class {name!r} has no training image in {train_root}{extra}")
    if len(positions["val"]) == 0:
        where = parts.get("val") or f"{train_root} (every class has a single image)"
        raise UserError(f"no readable validation image in {where}")

    def split_arrays(split):
        pos = positions.get(split)
        if pos is None:
            return None, None, None
        return (
            images[pos] if keep else None,
            None if keep else all_paths[ok[pos]],
            all_labels[ok[pos]],
        )

    train_x, train_p, _ = split_arrays("train")
    val_x, val_p, val_y = split_arrays("val")
    test_x, test_p, test_y = split_arrays("test")
    data = ImageData(
        class_names=class_names,
        train_images=train_x,
        train_paths=train_p,
        train_labels=train_labels,
        val_images=val_x,
        val_paths=val_p,
        val_labels=val_y,
        test_images=test_x,
        test_paths=test_p,
        test_labels=test_y,
        image_size=size,
        augment="resized_crop",
        skipped_files=skipped,
        source=source,
        memory_limit_gb=memory_limit_gb,
        origin=str(root),
    )
    return data, {split: all_paths[ok[pos]] for split, pos in positions.items()}


def _load_synthetic(
    data_dir, image_size, seed, memory_limit_gb, train_per_class, synthetic_seed=0, **options
) -> ImageData:
    unknown = set(options) - {"num_classes", "val_per_class", "test_per_class"}
    if unknown:
        raise TypeError(f"unknown synthetic options: {', '.join(sorted(unknown))}")
    size = image_size
    root = synthetic_images.ensure_synthetic_images(
        root=data_dir or "data/synthetic",
        image_size=size,
        seed=synthetic_seed,
        train_per_class=train_per_class,
        **options,
    )
    data, paths = _load_folder(str(root), size, seed, 0.2, memory_limit_gb, "synthetic")
    with open(root / "boxes.csv", newline="") as f:
        boxes = {
            str(root / row["path"]): [float(row[k]) for k in ("y0", "x0", "y1", "x1")]
            for row in csv.DictReader(f)
        }
    data.val_boxes = np.asarray([boxes[str(p)] for p in paths["val"]], np.float32).reshape(-1, 4)
    data.test_boxes = np.asarray([boxes[str(p)] for p in paths["test"]], np.float32).reshape(-1, 4)
    data.augment = "crop_pad"  # a random resized crop could cut the target out
    return data


def _load_mnist(source, data_dir, image_size, seed, val_fraction, clutter, allow_download):
    """An MNIST-family source: grey (N, S, S) images in memory; cluttered ones with boxes."""
    name = source.removeprefix("cluttered_")
    arrays = load_mnist_family(name, data_dir, allow_download=allow_download)
    if source.startswith("cluttered_"):
        # The clutter is part of the data set: drawn once (seed 0), the same for every run.
        splits = load_cluttered(
            name, arrays, clutter.canvas, clutter.distractors, clutter.distractor_size, seed=0
        )
        native = clutter.canvas
        train = splits["train"].images, splits["train"].labels, splits["train"].boxes / native
        test = splits["test"].images, splits["test"].labels, splits["test"].boxes / native
    else:
        native = 28
        train = arrays.train_images, arrays.train_labels, None
        test = arrays.test_images, arrays.test_labels, None
    labels = np.asarray(train[1], np.int32)
    (tx, ty, tb), (vx, vy, vb) = _carve_validation(train[0], labels, val_fraction, seed, train[2])
    as_boxes = (lambda b: None) if train[2] is None else (lambda b: np.asarray(b, np.float32))
    return ImageData(
        class_names=list(arrays.class_names),
        train_images=tx,
        train_paths=None,
        train_labels=ty,
        val_images=vx,
        val_paths=None,
        val_labels=vy,
        val_boxes=as_boxes(vb),
        test_images=test[0],
        test_labels=np.asarray(test[1], np.int32),
        test_boxes=as_boxes(test[2]),
        image_size=image_size,
        augment="crop_pad",
        source=source,
        origin=arrays.source,
    )


def _cifar_cache_dir() -> Path:
    """Where keras.datasets caches downloads: $KERAS_HOME/datasets or ~/.keras/datasets."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets"


def _load_cifar(
    source: str, image_size: int | None, seed: int, val_fraction: float, memory_limit_gb: float
) -> ImageData:
    import keras

    module = keras.datasets.cifar10 if source == "cifar10" else keras.datasets.cifar100
    try:
        # Keras announces "Downloading data from https://..." before it knows whether the
        # network is there; offline that line would precede our error as if it had worked.
        with contextlib.redirect_stdout(io.StringIO()):
            (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception:
        cached = "cifar-10-batches-py" if source == "cifar10" else "cifar-100-python"
        if (_cifar_cache_dir() / f"{cached}-target").exists():
            raise  # cached but unreadable: show what went wrong
        cache = str(_cifar_cache_dir())
        home = str(Path.home())
        if cache.startswith(home + "/"):
            cache = "~" + cache[len(home) :]
        name = "CIFAR-10" if source == "cifar10" else "CIFAR-100"
        raise UserError(
            f"{name} is not cached in {cache} and could not be downloaded (no network?); "
            "use --data synthetic or --data folder --data-dir DIR"
        ) from None
    size = image_size
    if size != 32 and image_files.fits_in_memory(len(x_train) + len(x_test), size, memory_limit_gb):
        x_train, x_test = _resize_in_batches(x_train, size), _resize_in_batches(x_test, size)
    labels = y_train.reshape(-1).astype(np.int32)
    (tx, ty, _), (vx, vy, _) = _carve_validation(x_train, labels, val_fraction, seed)
    return ImageData(
        class_names=list(CIFAR10_CLASSES if source == "cifar10" else CIFAR100_CLASSES),
        train_images=tx,
        train_paths=None,
        train_labels=ty,
        val_images=vx,
        val_paths=None,
        val_labels=vy,
        test_images=x_test,
        test_labels=y_test.reshape(-1).astype(np.int32),
        image_size=size,
        augment="crop_pad",
        source=source,
        memory_limit_gb=memory_limit_gb,
        origin=str(_cifar_cache_dir()),
    )


def _resize_in_batches(images: np.ndarray, size: int, batch: int = 1000) -> np.ndarray:
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i in range(0, len(images), batch):
        out[i : i + batch] = image_files.resize_uint8(tf.constant(images[i : i + batch]), size)
    return out
