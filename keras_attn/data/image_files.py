"""Image files on disk: scan class folders, decode with TensorFlow, find unreadable files.

Decoding is pure TensorFlow (`tf.io.decode_image` plus a fix for 8-bit palette BMPs,
which TF would otherwise return as palette indices shown as grey levels, and the JPEG
EXIF Orientation tag, which TF ignores), so the same function validates files at load
time and streams them inside `tf.data`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_attn.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def class_folders(root: Path) -> list[str]:
    """Sorted names of the visible sub-directories of `root`."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_hidden(p))


def image_files(folder: Path) -> list[str]:
    """Image files under `folder` (recursively, hidden entries skipped), sorted."""
    files = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            files.append(str(path))
    return sorted(files)


def scan(root: Path, class_names: list[str]) -> tuple[list[str], list[int]]:
    """Paths and labels of the images in `root/<class>/` for the given classes."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = root / name
        if folder.is_dir():
            files = image_files(folder)
            paths += files
            labels += [label] * len(files)
    return paths, labels


def fits_in_memory(count: int, size: int, memory_limit_gb: float) -> bool:
    """Whether `count` uint8 RGB images of size x size fit in `memory_limit_gb` GiB."""
    return count * size * size * 3 <= memory_limit_gb * 2**30


def _u16(b: tf.Tensor, offset: int) -> tf.Tensor:
    return b[offset] + 256 * b[offset + 1]


def _u32(b: tf.Tensor, offset: int) -> tf.Tensor:
    return _u16(b, offset) + 65536 * _u16(b, offset + 2)


def _decode_palette_bmp(contents: tf.Tensor, header: tf.Tensor) -> tf.Tensor:
    indices = tf.cast(tf.io.decode_bmp(contents, channels=0)[..., 0], tf.int32)
    colours_used = _u32(header, 46)
    count = tf.where(colours_used > 0, colours_used, 256)
    table = tf.strings.substr(contents, 14 + _u32(header, 14), 4 * count)
    palette = tf.reshape(tf.io.decode_raw(table, tf.uint8), [-1, 4])[:, 2::-1]  # BGRA -> RGB
    return tf.gather(palette, tf.minimum(indices, tf.shape(palette)[0] - 1))


def _read(contents: tf.Tensor, offset: tf.Tensor, n: int) -> tf.Tensor:
    """`n` bytes of `contents` from `offset` as int64 (n,), zeros past the end."""
    # Offsets come from the file itself: clamp so a corrupt one cannot make substr fail.
    size = tf.cast(tf.strings.length(contents), tf.int64)
    offset = tf.cast(tf.clip_by_value(tf.cast(offset, tf.int64), 0, size), tf.int32)
    chunk = tf.strings.join([tf.strings.substr(contents, offset, n), b"\0" * n])
    raw = tf.io.decode_raw(tf.strings.substr(chunk, 0, n), tf.uint8)
    return tf.cast(tf.reshape(raw, [n]), tf.int64)


def _uint(b: tf.Tensor, little: tf.Tensor) -> tf.Tensor:
    """Unsigned integers from int64 bytes (..., k), little- or big-endian -> (...)."""
    weights = tf.constant([256**i for i in range(b.shape[-1])], tf.int64)
    return tf.reduce_sum(b * tf.where(little, weights, weights[::-1]), axis=-1)


_EXIF_SEARCH = 1 << 16  # EXIF comes first, or after headers such as JFIF's (bytes searched)
_MAX_ENTRIES = 64  # IFD0 tags are sorted, so Orientation (0x0112) comes within the first few


def _exif_orientation(contents: tf.Tensor) -> tf.Tensor:
    """EXIF Orientation (1-8) of JPEG bytes: int64 scalar, 1 when absent, unreadable or
    not a JPEG."""
    # Find the EXIF block by its "Exif\0\0" signature (splitting is a byte search, with no
    # loop over segments) and accept it only where an APP1 segment (FF E1, length) starts.
    head = tf.strings.substr(contents, 0, _EXIF_SEARCH)
    start = tf.strings.length(tf.strings.split(head, b"Exif\0\0", maxsplit=1)[0])
    exif = (
        tf.equal(tf.strings.substr(contents, 0, 2), b"\xff\xd8")
        & (start >= 4)
        & (start < tf.strings.length(head))
        & tf.equal(tf.strings.substr(contents, tf.maximum(start - 4, 0), 2), b"\xff\xe1")
    )
    # Only files with EXIF pay for reading its tags.
    return tf.cond(
        exif,
        lambda: _orientation_tag(contents, tf.cast(start, tf.int64) + 6),
        lambda: tf.constant(1, tf.int64),
    )


def _orientation_tag(contents: tf.Tensor, tiff: tf.Tensor) -> tf.Tensor:
    """The Orientation tag of the TIFF structure at offset `tiff` of `contents`, 1 when
    absent or out of range."""
    little = tf.equal(_read(contents, tiff, 1)[0], ord("I"))  # "II" little-endian, "MM" big
    ifd = tiff + _uint(_read(contents, tiff + 4, 4), little)  # after the byte order and 42
    count = _uint(_read(contents, ifd, 2), little)
    entries = tf.reshape(_read(contents, ifd + 2, 12 * _MAX_ENTRIES), [_MAX_ENTRIES, 12])
    found = tf.equal(_uint(entries[:, :2], little), 0x0112) & (
        tf.range(_MAX_ENTRIES, dtype=tf.int64) < count
    )
    value = tf.reduce_max(tf.where(found, _uint(entries[:, 8:10], little), 0))
    return tf.where((value >= 1) & (value <= 8), value, tf.constant(1, tf.int64))


def _orient(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """(H, W, 3) as stored -> as viewers show it, by EXIF `orientation` ((W, H, 3) for 5-8).

    2 mirrors, 3 turns 180 degrees, 4 flips; 5-8 transpose first, then 6 (stored turned
    anticlockwise) mirrors to turn it clockwise, 7 turns 180 degrees and 8 flips.
    """
    o = tf.cast(orientation, tf.int32)

    def turned():
        perm = tf.where(o >= 5, [1, 0, 2], [0, 1, 2])
        flip = tf.reduce_any(tf.equal(o, [3, 4, 7, 8]))  # rows reversed
        mirror = tf.reduce_any(tf.equal(o, [2, 3, 6, 7]))  # columns reversed
        return tf.reverse(tf.transpose(image, perm), tf.boolean_mask([0, 1], [flip, mirror]))

    # tf.reverse copies even with no axes: pass the usual upright image straight through.
    return tf.cond(tf.equal(o, 1), lambda: image, turned)


def decode(contents: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/BMP/GIF/WebP bytes -> uint8 RGB (H, W, 3): GIFs give their first
    frame, 16-bit PNGs are scaled to 8 bits, JPEGs are turned by their EXIF Orientation."""
    head = tf.strings.substr(
        tf.strings.join([tf.strings.substr(contents, 0, 54), b"\0" * 54]), 0, 54
    )
    header = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
    palette_bmp = (
        tf.equal(tf.strings.substr(contents, 0, 2), b"BM")
        & (_u32(header, 14) >= 40)  # BITMAPINFOHEADER or later
        & tf.equal(_u16(header, 28), 8)  # 8 bits per pixel: palette indices
        & tf.equal(_u32(header, 30), 0)  # uncompressed
    )
    image = tf.cond(
        palette_bmp,
        lambda: _decode_palette_bmp(contents, header),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    return _orient(image, _exif_orientation(contents))


def resize_uint8(images: tf.Tensor, size: int) -> tf.Tensor:
    """Resize uint8 (..., H, W, 3) to size x size, antialiased; unchanged if already that size."""
    shape = tf.shape(images)

    def resized():
        out = tf.image.resize(images, [size, size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    same = tf.equal(shape[-3], size) & tf.equal(shape[-2], size)
    return tf.cond(same, lambda: images, resized)


def load_image(path: tf.Tensor, size: int) -> tf.Tensor:
    """Read, decode and resize one image file -> uint8 (size, size, 3)."""
    image = resize_uint8(decode(tf.io.read_file(path)), size)
    return tf.ensure_shape(image, [size, size, 3])


def _reason(path: str) -> str:
    """Why one file fails to decode, as a short single line."""
    try:
        load_image(tf.constant(path), 8)
    except tf.errors.OpError as e:
        message = re.sub(r"\{\{.*?\}\}\s*", "", e.message)
        message = re.sub(r"\s*\[Op:.*$", "", message, flags=re.S)
        return " ".join(message.split())[:160] or type(e).__name__
    return "could not be decoded"


def decode_files(
    paths: list[str], size: int, keep: bool
) -> tuple[np.ndarray, np.ndarray | None, list[dict]]:
    """Decode every file once (in parallel), find the unreadable ones.

    Returns (indices of the readable files, their uint8 (n, size, size, 3) images when
    `keep` else None, skipped files as {"path", "reason"}); each skipped file is logged.
    """
    n = len(paths)
    if keep:
        images = np.empty((n, size, size, 3), np.uint8)

        def fn(p, i):
            return i, load_image(p, size)
    else:
        images = None

        def fn(p, i):
            return i, tf.shape(decode(tf.io.read_file(p)))

    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), tf.range(n)))
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(256).prefetch(2)
    found = []
    for index, image in ds.as_numpy_iterator():
        found.append(index)
        if keep:
            images[index] = image
    ok = np.concatenate(found) if found else np.zeros((0,), np.int32)
    bad = sorted(set(range(n)) - set(ok.tolist()))
    skipped = []
    for i in bad:
        reason = _reason(paths[i])
        log.warning("skipping unreadable image %s: %s", paths[i], reason)
        skipped.append({"path": paths[i], "reason": reason})
    if keep and bad:  # compact in place, keeping order
        for j, i in enumerate(ok):
            if i != j:
                images[j] = images[i]
        images = images[: len(ok)]
    return ok, images, skipped


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of train and val items: `val_fraction` of each class (at least one when a
    class has two or more items, never all of them), chosen by `seed`; each in input order."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = len(members)
        n_val = 0 if n < 2 else min(n - 1, max(1, round(n * val_fraction)))
        shuffled = rng.permutation(members)
        val.append(shuffled[:n_val])
        train.append(shuffled[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def check_folder(data_dir: str | None) -> Path:
    if not data_dir:
        raise UserError("--data folder needs --data-dir DIR (one sub-folder per class)")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise UserError(f"data directory {root} does not exist")
    if not root.is_dir():
        raise UserError(f"data directory {root} is not a directory")
    return root
