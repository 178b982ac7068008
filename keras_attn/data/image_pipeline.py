"""tf.data pipelines over an `ImageData` (re-exported by `keras_attn.data.images`).

Training data is a pure function of (seed, epoch): each epoch's order comes from
`keras_attn.data.order` and each image's augmentation is seeded from
(seed, epoch, index), so a run resumed at epoch k sees exactly what an uninterrupted
run sees, whatever the model or the parallelism. No Python runs per element.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from keras_attn.data.image_files import fits_in_memory, load_image, resize_uint8
from keras_attn.data.order import epoch_dataset

if TYPE_CHECKING:
    from keras_attn.data.images import ImageData

AUGMENTATIONS = ("crop_pad", "resized_crop", "none")


def steps_per_epoch(data: ImageData, batch_size: int) -> int:
    return math.ceil(data.num_train / batch_size)


def as_model_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) grey or (N, H, W, 3) -> uint8 (N, size, size, 3): in-memory images
    as the pipelines hand them to the model (RGB, resized the same way)."""
    x = tf.convert_to_tensor(np.asarray(images, np.uint8))
    if x.shape.rank == 3:
        x = tf.image.grayscale_to_rgb(x[..., None])
    return resize_uint8(x, size).numpy()


def _loader(images: np.ndarray | None, paths: np.ndarray | None, size: int):
    """index -> uint8 (size, size, 3), gathering from memory or reading the file; grey
    (N, H, W) arrays (the MNIST family) stay grey in memory and become RGB here."""
    if images is not None:
        table = tf.constant(images)
        grey = images.ndim == 3

        def gather(i):
            image = tf.gather(table, i)
            return tf.image.grayscale_to_rgb(image[..., None]) if grey else image

        if images.shape[1:3] == (size, size):
            return gather
        return lambda i: tf.ensure_shape(resize_uint8(gather(i), size), [size, size, 3])
    table = tf.constant(paths, tf.string)
    return lambda i: load_image(tf.gather(table, i), size)


def augment_image(image: tf.Tensor, mode: str, key: tf.Tensor, size: int) -> tf.Tensor:
    """Augment one uint8 (size, size, 3) image with stateless ops seeded by `key` (shape [2])."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    if mode == "crop_pad":
        pad = max(1, round(size * 4 / 32))
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, [size, size, 3], seed=crop_seed)
    elif mode == "resized_crop":
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=crop_seed,
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.35, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        crop = tf.slice(image, begin, extent)
        image = tf.image.resize(crop, [size, size], antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
    elif mode != "none":
        raise ValueError(f"unknown augmentation {mode!r}; choose one of {AUGMENTATIONS}")
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return tf.ensure_shape(tf.cast(image, tf.float32), [size, size, 3])


def train_dataset(
    data: ImageData, batch_size: int, seed: int, start_epoch: int = 0, epochs: int = 1
) -> tf.data.Dataset:
    """Shuffled, augmented, batched epochs `start_epoch .. epochs - 1`, back to back."""
    if data.augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {data.augment!r}; choose one of {AUGMENTATIONS}")
    size = data.image_size
    load = _loader(data.train_images, data.train_paths, size)
    labels = tf.constant(data.train_labels, tf.int32)
    seed_tensor = tf.constant(seed, tf.int64)

    def example(index, epoch):
        key = tf.random.experimental.stateless_fold_in(tf.stack([seed_tensor, epoch]), index)
        image = augment_image(load(index), data.augment, key, size)
        return image, tf.gather(labels, index)

    def build_epoch(indices, epoch):
        ds = indices.map(
            lambda i: example(i, epoch),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        return ds.batch(batch_size)

    ds = epoch_dataset(data.num_train, seed, True, start_epoch, epochs, build_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def val_dataset(data: ImageData, batch_size: int) -> tf.data.Dataset:
    """Validation images in a fixed order, unaugmented, batched; decoded files are cached."""
    return _fixed_dataset(data, data.val_images, data.val_paths, data.val_labels, batch_size)


def test_dataset(data: ImageData, batch_size: int) -> tf.data.Dataset | None:
    """The test split like validation (None when the source has none)."""
    if data.test_labels is None or not len(data.test_labels):
        return None
    return _fixed_dataset(data, data.test_images, data.test_paths, data.test_labels, batch_size)


def _fixed_dataset(data: ImageData, images, paths, labels, batch_size) -> tf.data.Dataset:
    load = _loader(images, paths, data.image_size)
    table = tf.constant(labels, tf.int32)
    ds = tf.data.Dataset.range(len(labels)).map(
        lambda i: (load(i), tf.gather(table, i)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    decoded = images is None or images.shape[1:3] != (data.image_size, data.image_size)
    if decoded and fits_in_memory(len(labels), data.image_size, data.memory_limit_gb):
        ds = ds.cache()  # decode or resize once
    ds = ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    return ds.prefetch(tf.data.AUTOTUNE)
