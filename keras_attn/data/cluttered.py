"""Cluttered MNIST-family images, after Mnih et al. 2014, "Recurrent Models of Visual Attention".

Each 28x28 image is placed whole at a uniformly random position on a black `canvas` x
`canvas` image (default 60), and `distractors` (default 4) square patches of
`distractor_size` pixels (default 8), cut at random places from random OTHER images of
the same split, are pasted at random places, combined by pixel-wise maximum as in the
paper's code. Patches may overlap the target and each other, and may be blank (a corner
of a digit): the paper draws them without filtering, so this does too.

With every image comes its target's box `(y0, x0, y1, x1)` in canvas pixels, half-open
(`image[y0:y1, x0:x1]`): the tight bounding box of the target's nonzero pixels, not the
28x28 placement, because focus measures want the object, not its empty margin. A blank
target (none in the real sets) gets its 28x28 placement box.

    splits = load_cluttered("mnist", load_mnist_family("mnist", data_dir), seed=0)
    splits["train"].images  # (60000, 60, 60) uint8
    splits["train"].labels  # (60000,) as the source labels
    splits["train"].boxes   # (60000, 4) int16 (y0, x0, y1, x1)

Deterministic: `cluttered_split(..., seed)` draws everything from
`np.random.Generator(np.random.PCG64(seed))`; `load_cluttered` gives split i (train 0,
test 1) the seed `(seed, i)`, so the two splits' clutter is drawn independently and
`cluttered_split(arrays.train_images, arrays.train_labels, seed=(seed, 0))` reproduces
the cached train split bit for bit.

Cached as one `.npz` per split (images, labels, boxes) under `cache_dir` (default
`data/cache/cluttered/`), keyed by the sha256 of the split's source images and labels,
the canvas, distractor count and size, the seed and a format version; written atomically.
A cache file that does not load or does not match is regenerated (a warning, no
traceback); files are read with `allow_pickle=False`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from keras_attn.data.mnist import MnistArrays
from keras_attn.errors import UserError
from keras_attn.files import atomic_write

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "data/cache/cluttered"
SPLITS = ("train", "test")
# Part of every cache key: bump it when the generator's output changes, so older cache
# files stop matching instead of being served as if current.
_FORMAT_VERSION = 1


class ClutteredSplit(NamedTuple):
    """One generated split; `images, labels, boxes = split` unpacks it.

    Attributes:
        images: (N, canvas, canvas) uint8.
        labels: (N,) the source labels, unchanged.
        boxes: (N, 4) int16, the target's tight box (y0, x0, y1, x1), half-open, in pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray


def cluttered_split(
    images: np.ndarray,
    labels: np.ndarray,
    canvas: int = 60,
    distractors: int = 4,
    distractor_size: int = 8,
    seed: int | Sequence[int] = 0,
) -> ClutteredSplit:
    """Cluttered versions of `images` (N, h, w) uint8, each on a `canvas` x `canvas` image.

    Distractor patches come from other images of this same array (never the image's own),
    so generating a split never looks at another split. Vectorised over N: the only
    Python loop runs over the `distractors` patches per image.

    Returns:
        ClutteredSplit(images (N, canvas, canvas) uint8, labels (N,), boxes (N, 4) int16).
    """
    images, labels = np.asarray(images), np.asarray(labels)
    _check_arguments(images, labels, canvas, distractors, distractor_size)
    n, h, w = images.shape
    s, k = distractor_size, distractors
    rng = np.random.Generator(np.random.PCG64(seed))
    # Every draw happens up front, in a fixed order, so the result depends on the seed only.
    place = rng.integers(0, [canvas - h + 1, canvas - w + 1], size=(n, 2))
    if k:
        # An offset in 1..n-1 from the image's own index: uniform over the OTHER images.
        source = (np.arange(n)[:, None] + rng.integers(1, n, size=(n, k))) % n
        cut = rng.integers(0, [h - s + 1, w - s + 1], size=(n, k, 2))
        paste = rng.integers(0, canvas - s + 1, size=(n, k, 2))

    out = np.zeros((n, canvas, canvas), np.uint8)
    every = np.arange(n)
    # Windows of `out` indexed by their top-left corner: one fancy-indexed assignment pastes
    # every image at once, without (N, h, w) index arrays (1 GB of int64 for 60k images).
    targets = sliding_window_view(out, (h, w), axis=(1, 2), writeable=True)
    targets[every, place[:, 0], place[:, 1]] = images
    if k:
        patches = sliding_window_view(images, (s, s), axis=(1, 2))
        spots = sliding_window_view(out, (s, s), axis=(1, 2), writeable=True)
        for j in range(k):  # one patch per image per pass: no two writes hit the same pixel
            y, x = paste[:, j, 0], paste[:, j, 1]
            patch = patches[source[:, j], cut[:, j, 0], cut[:, j, 1]]
            spots[every, y, x] = np.maximum(spots[every, y, x], patch)
    return ClutteredSplit(out, labels.copy(), _tight_boxes(images, place))


def _check_arguments(images, labels, canvas, distractors, distractor_size) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(f"images must be (N, h, w) uint8, got {images.dtype}{images.shape}")
    n, h, w = images.shape
    if labels.shape != (n,):
        raise UserError(f"labels must have shape ({n},), got {labels.shape}")
    if canvas < max(h, w):
        raise UserError(f"canvas must be at least the image side ({max(h, w)}), got {canvas}")
    if distractors < 0:
        raise UserError(f"distractors must be 0 or more, got {distractors}")
    if not 1 <= distractor_size <= min(h, w):
        raise UserError(f"distractor size must be in 1..{min(h, w)}, got {distractor_size}")
    if distractors and n < 2:
        raise UserError(f"distractors need at least 2 images to cut from, got {n}")


def _tight_boxes(images: np.ndarray, place: np.ndarray) -> np.ndarray:
    """(N, 4) int16 boxes of the nonzero pixels of `images` (N, h, w) placed at `place` (N, 2)."""
    n, h, w = images.shape
    rows = images.any(axis=2)  # (N, h)
    cols = images.any(axis=1)  # (N, w)
    y0, y1 = rows.argmax(1), h - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
    blank = ~rows.any(1)  # argmax of all-False is 0: use the placement box instead
    y0, x0 = np.where(blank, 0, y0), np.where(blank, 0, x0)
    y1, x1 = np.where(blank, h, y1), np.where(blank, w, x1)
    py, px = place[:, 0], place[:, 1]
    return np.stack([py + y0, px + x0, py + y1, px + x1], axis=1).astype(np.int16)


def load_cluttered(
    name: str,
    arrays: MnistArrays,
    canvas: int = 60,
    distractors: int = 4,
    distractor_size: int = 8,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, ClutteredSplit]:
    """{"train": ClutteredSplit, "test": ClutteredSplit} for `arrays`, from the cache or made.

    Args:
        name: the source's name ("mnist", "fashion_mnist"), for readable cache file names
            (the key itself comes from the arrays' content).
        arrays: the source images and labels (`load_mnist_family`).
        canvas, distractors, distractor_size: as `cluttered_split`.
        seed: split i is generated with seed `(seed, i)`.
        cache_dir: folder of the cache files; None: `DEFAULT_CACHE_DIR`.
    """
    folder = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR)
    result = {}
    for index, split in enumerate(SPLITS):
        images = getattr(arrays, f"{split}_images")
        labels = getattr(arrays, f"{split}_labels")
        key = cache_key(images, labels, canvas, distractors, distractor_size, (seed, index))
        path = folder / (
            f"{name}-{split}-c{canvas}-d{distractors}-s{distractor_size}-seed{seed}-{key[:16]}.npz"
        )
        cached = _read_cache(path, labels, canvas)
        if cached is None:
            cached = cluttered_split(
                images, labels, canvas, distractors, distractor_size, seed=(seed, index)
            )
            _write_cache(path, cached)
        result[split] = cached
    return result


def cache_key(
    images: np.ndarray, labels: np.ndarray, canvas: int, distractors: int,
    distractor_size: int, seed: int | Sequence[int],
) -> str:  # fmt: skip
    """sha256 (hex) of the source split's content and every setting that shapes the output."""
    digest = hashlib.sha256()
    settings = (_FORMAT_VERSION, canvas, distractors, distractor_size, tuple(np.atleast_1d(seed)))
    digest.update(repr(settings).encode())
    for array in (np.asarray(images), np.asarray(labels)):
        # dtype and shape too: the same bytes as (N, 28, 28) or (N, 784) are different sources.
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _read_cache(path: Path, labels: np.ndarray, canvas: int) -> ClutteredSplit | None:
    """The split stored at `path`, or None when absent, unreadable or not what was asked."""
    if not path.is_file():
        return None
    n = len(labels)
    try:
        with np.load(path, allow_pickle=False) as f:  # a cache file is data, never code
            split = ClutteredSplit(f["images"], f["labels"], f["boxes"])
        ok = (
            split.images.shape == (n, canvas, canvas)
            and split.images.dtype == np.uint8
            and split.boxes.shape == (n, 4)
            and split.boxes.dtype == np.int16
            and np.array_equal(split.labels, labels)
        )
        if not ok:
            raise ValueError("arrays of the wrong shape, type or labels")
    except Exception as err:  # truncated zip, bad header, missing key: all just a miss
        log.warning("regenerating unreadable cluttered cache file %s: %s", path, err)
        return None
    return split


def _write_cache(path: Path, split: ClutteredSplit) -> None:
    # Uncompressed (217 MB for 60k at the defaults): zlib would shrink it to 17 MB but make
    # loading it (2.4 s) slower than generating it afresh (about 1.3 s), measured here.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **split._asdict()))
    except OSError as err:  # a read-only or full disk costs the cache, not the run
        log.warning("could not write cluttered cache file %s: %s", path, err)
