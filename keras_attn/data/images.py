"""Image classification data: class folders, CIFAR-10/100 or the synthetic shapes set.

`load_image_data` returns an `ImageData` (class names, images or paths, labels);
`train_dataset` / `val_dataset` / `steps_per_epoch` (from `image_pipeline`, re-exported
here) turn it into `tf.data` pipelines yielding `(float32 (B, S, S, 3) RGB in [0, 255],
int32 (B,))`. Normalisation belongs to the model.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_attn.data import image_files, synthetic_images
from keras_attn.data.image_pipeline import (  # noqa: F401  (part of this module's API)
    augment_image,
    steps_per_epoch,
    train_dataset,
    val_dataset,
)
from keras_attn.errors import UserError

SOURCES = ("folder", "synthetic", "cifar10", "cifar100")
DEFAULT_FOLDER_SIZE = 128

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
    """A train/val image classification set, held in memory or streamed from files.

    Exactly one of `train_images` (uint8 (N, H, W, 3), normally H = W = image_size;
    other sizes are resized in the pipelines) and `train_paths` (str (N,)) is set;
    likewise for val. Labels are int32 indices into `class_names`.
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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def num_val(self) -> int:
        return len(self.val_labels)

    def summary_line(self) -> str:
        return (
            f"{self.source}: {self.num_classes} classes, {self.num_train} train / {self.num_val} "
            f"val images at {self.image_size}x{self.image_size}, "
            f"{len(self.skipped_files)} unreadable files skipped"
        )


def load_image_data(
    source: str,
    data_dir: str | None,
    image_size: int | None,
    seed: int,
    val_fraction: float = 0.2,
    memory_limit_gb: float = 4.0,
    **synthetic_options,
) -> ImageData:
    """Load `source` ("folder", "synthetic", "cifar10" or "cifar100").

    folder: `data_dir/<class>/*` split per class by `seed`, or `data_dir/train/<class>/*`
    with `data_dir/val/` (or `test/`). Unreadable files are skipped, logged and listed.
    Decoded images are kept in memory when they fit `memory_limit_gb`, else streamed.
    synthetic: generated under `data_dir` (default data/synthetic); `synthetic_options`
    are `num_classes`, `train_per_class`, `val_per_class`, `synthetic_seed` (the
    dataset's own seed, 0 by default) and are ignored by the other sources.
    """
    if image_size is not None and image_size < 8:
        raise UserError(f"image size must be at least 8 pixels, got {image_size}")
    if source == "folder":
        size = image_size or DEFAULT_FOLDER_SIZE
        return _load_folder(data_dir, size, seed, val_fraction, memory_limit_gb)[0]
    if source == "synthetic":
        return _load_synthetic(data_dir, image_size, seed, memory_limit_gb, **synthetic_options)
    if source in ("cifar10", "cifar100"):
        return _load_cifar(source, image_size, memory_limit_gb)
    raise UserError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)}")


def _load_folder(
    data_dir: str | None,
    size: int,
    seed: int,
    val_fraction: float,
    memory_limit_gb: float,
    source: str = "folder",
) -> tuple[ImageData, np.ndarray]:
    """The folder's ImageData and its validation file paths (also when held in memory)."""
    root = image_files.check_folder(data_dir)
    val_root = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    presplit = (root / "train").is_dir() and val_root is not None
    train_root = root / "train" if (root / "train").is_dir() else root
    class_names = image_files.class_folders(train_root)
    if not class_names:
        raise UserError(f"no class sub-folders in {train_root} (expected {train_root}/<class>/*)")
    paths, labels = image_files.scan(train_root, class_names)
    n_train = len(paths)
    if presplit:
        unknown = sorted(set(image_files.class_folders(val_root)) - set(class_names))
        if unknown:
            raise UserError(f"classes in {val_root} not in {train_root}: {', '.join(unknown)}")
        val_paths, val_labels = image_files.scan(val_root, class_names)
        paths, labels = paths + val_paths, labels + val_labels
    elif not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    if not paths:
        exts = " ".join(image_files.IMAGE_EXTENSIONS)
        raise UserError(f"no images ({exts}) found under {root}")
    if len(class_names) < 2:
        raise UserError(f"need at least 2 classes, found 1 ({class_names[0]}) in {train_root}")

    keep = image_files.fits_in_memory(len(paths), size, memory_limit_gb)
    ok, images, skipped = image_files.decode_files(paths, size, keep)
    all_paths, all_labels = np.asarray(paths, dtype=str), np.asarray(labels, np.int32)
    if presplit:
        train_pos = np.flatnonzero(ok < n_train)
        val_pos = np.flatnonzero(ok >= n_train)
    else:
        train_pos, val_pos = image_files.stratified_split(all_labels[ok], val_fraction, seed)
    train_labels = all_labels[ok[train_pos]]
    counts = np.bincount(train_labels, minlength=len(class_names))
    if (counts == 0).any():
        name = class_names[int(np.argmin(counts))]
        extra = f" ({len(skipped)} unreadable files skipped)" if skipped else ""
        raise UserError(f"class {name!r} has no training image in {train_root}{extra}")
    if len(val_pos) == 0:
        where = val_root if presplit else f"{train_root} (every class has a single image)"
        raise UserError(f"no readable validation image in {where}")
    val_paths = all_paths[ok[val_pos]]
    data = ImageData(
        class_names=class_names,
        train_images=images[train_pos] if keep else None,
        train_paths=None if keep else all_paths[ok[train_pos]],
        train_labels=train_labels,
        val_images=images[val_pos] if keep else None,
        val_paths=None if keep else val_paths,
        val_labels=all_labels[ok[val_pos]],
        image_size=size,
        augment="resized_crop",
        skipped_files=skipped,
        source=source,
        memory_limit_gb=memory_limit_gb,
    )
    return data, val_paths


def _load_synthetic(
    data_dir, image_size, seed, memory_limit_gb, synthetic_seed=0, **options
) -> ImageData:
    unknown = set(options) - {"num_classes", "train_per_class", "val_per_class"}
    if unknown:
        raise TypeError(f"unknown synthetic options: {', '.join(sorted(unknown))}")
    size = image_size or 64
    root = synthetic_images.ensure_synthetic_images(
        root=data_dir or "data/synthetic", image_size=size, seed=synthetic_seed, **options
    )
    data, val_paths = _load_folder(str(root), size, seed, 0.2, memory_limit_gb, "synthetic")
    with open(root / "boxes.csv", newline="") as f:
        boxes = {
            str(root / row["path"]): [float(row[k]) for k in ("y0", "x0", "y1", "x1")]
            for row in csv.DictReader(f)
        }
    data.val_boxes = np.asarray([boxes[str(p)] for p in val_paths], np.float32).reshape(-1, 4)
    data.augment = "crop_pad"  # a random resized crop could cut the target out
    return data


def _cifar_cache_dir() -> Path:
    """Where keras.datasets caches downloads: $KERAS_HOME/datasets or ~/.keras/datasets."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets"


def _load_cifar(source: str, image_size: int | None, memory_limit_gb: float) -> ImageData:
    import keras

    module = keras.datasets.cifar10 if source == "cifar10" else keras.datasets.cifar100
    try:
        (x_train, y_train), (x_val, y_val) = module.load_data()
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
    size = image_size or 32
    if size != 32 and image_files.fits_in_memory(len(x_train) + len(x_val), size, memory_limit_gb):
        x_train, x_val = _resize_in_batches(x_train, size), _resize_in_batches(x_val, size)
    return ImageData(
        class_names=list(CIFAR10_CLASSES if source == "cifar10" else CIFAR100_CLASSES),
        train_images=x_train,
        train_paths=None,
        train_labels=y_train.reshape(-1).astype(np.int32),
        val_images=x_val,
        val_paths=None,
        val_labels=y_val.reshape(-1).astype(np.int32),
        image_size=size,
        augment="crop_pad",
        source=source,
        memory_limit_gb=memory_limit_gb,
    )


def _resize_in_batches(images: np.ndarray, size: int, batch: int = 1000) -> np.ndarray:
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i in range(0, len(images), batch):
        out[i : i + batch] = image_files.resize_uint8(tf.constant(images[i : i + batch]), size)
    return out
