"""Focus that can be trusted: measured once per run, at the end, on the best-val model.

The per-epoch focus (`keras_attn.study.focus`) is the share of a map's mass inside the
target box. Here each map is asked three further questions, each with its own chance
level, so a number can be read without knowing how the map is scaled:

- does it point at the target? The pointing game (its maximum cell inside the box)
  against a uniformly random cell, and the AUROC of its cells as a detector of inside
  cells against 0.5;
- does it depend on what the model learnt? The Spearman correlation between the maps
  of the trained model and of the same architecture re-initialised (low is good);
- does the model need what it shows? The accuracy lost when the region the map ranks
  highest is erased, against erasing a random region of the same area.

Maps are (N,h,w) >= 0 at feature-map resolution; boxes are (N,4) normalised
(y0, x0, y1, x1), half-open; cell (i, j) is inside a box when its centre
((i + .5) / h, (j + .5) / w) is.
"""

from __future__ import annotations

import math
import os

import cv2
import keras
import numpy as np
from scipy.stats import rankdata

from keras_attn.study.focus import _nanmean, box_area_share, model_maps
from keras_attn.training.files import atomic_write_json, read_json

# --- where a map points ---------------------------------------------------------------------


def inside_cells(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N,4) normalised boxes -> (N,height,width) bool: True where a cell's centre is inside."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rows = (np.arange(height) + 0.5) / height
    cols = (np.arange(width) + 0.5) / width
    in_rows = (rows[None] >= boxes[:, 0:1]) & (rows[None] < boxes[:, 2:3])
    in_cols = (cols[None] >= boxes[:, 1:2]) & (cols[None] < boxes[:, 3:4])
    return in_rows[:, :, None] & in_cols[:, None, :]


def _flat(maps: np.ndarray) -> np.ndarray:
    """(N,h,w) -> (N,) bool: True where the map has one value everywhere (no location)."""
    return maps.max(axis=(1, 2)) == maps.min(axis=(1, 2))


def pointing_game(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,h,w), (N,4) -> (N,): 1.0 when the map's maximum cell is inside the box, else 0.0.

    The pointing game of Zhang et al. 2016 ("Top-down neural attention by excitation
    backprop"). When several cells share the maximum exactly, the score is the share
    of them inside the box (a tie half in, half out scores 0.5), so a tie is neither
    rewarded nor punished by where argmax happens to look first. A flat map points
    nowhere: NaN; so does a map holding NaN (a collapsed model's), without a warning.
    """
    maps = np.asarray(maps, np.float64)
    inside = inside_cells(boxes, *maps.shape[1:])
    top = maps == maps.max(axis=(1, 2), keepdims=True)
    with np.errstate(invalid="ignore"):  # no cell equals a NaN maximum: 0 / 0
        hits = (top & inside).sum(axis=(1, 2)) / top.sum(axis=(1, 2))
    return np.where(_flat(maps), np.nan, hits)


def pointing_chance(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,h,w), (N,4) -> (N,): the pointing game of a uniformly random cell.

    That is the share of the map's cells inside the box: each image's own baseline,
    which differs from the box's area when the box covers cells only in part.
    """
    inside = inside_cells(boxes, *np.shape(maps)[1:])
    return inside.mean(axis=(1, 2))


def _ranks(maps: np.ndarray) -> np.ndarray:
    """(N,h,w) -> (N,h*w): each map's cells ranked 1..h*w, ties sharing their mean rank."""
    return rankdata(np.asarray(maps, np.float64).reshape(len(maps), -1), axis=1)


def map_auroc(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,h,w), (N,4) -> (N,): AUROC of each map's cells as a detector of inside cells.

    Mann-Whitney U / (n_in * n_out): the chance that a random inside cell outscores a
    random outside one, ties counting half (through the mean ranks). Chance is 0.5,
    also for a flat map. NaN when no cell or every cell is inside (nothing to rank).
    """
    ranks = _ranks(maps)
    inside = inside_cells(boxes, *np.shape(maps)[1:]).reshape(len(ranks), -1)
    n_in = inside.sum(axis=1).astype(np.float64)
    n_out = inside.shape[1] - n_in
    u = (ranks * inside).sum(axis=1) - n_in * (n_in + 1) / 2
    defined = (n_in > 0) & (n_out > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, u / np.where(defined, n_in * n_out, 1.0), np.nan)


def rank_correlation(maps_a: np.ndarray, maps_b: np.ndarray) -> np.ndarray:
    """(N,h,w) twice -> (N,): per image, the Spearman correlation of the two maps' cells.

    NaN when either map is flat (its ranks have no spread). For the sanity check of
    Adebayo et al. 2018 ("Sanity checks for saliency maps"): a map that explains the
    model changes when its trained weights are re-initialised, so trained versus
    randomised should correlate little.
    """
    a, b = _ranks(maps_a), _ranks(maps_b)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (a * b).sum(axis=1) / np.where(norm > 0, norm, 1.0), np.nan)


# --- erasing what a map shows ---------------------------------------------------------------


def background_value(image: np.ndarray) -> np.ndarray:
    """(H,W,C) -> (C,): the median of the image's border pixels, per channel.

    The border is where the target rarely is, so it samples the background: black on
    cluttered MNIST, the texture's typical colour on the synthetic shapes. The median,
    not the mean, ignores the clutter or distractor that crosses the border.
    """
    border = np.ones(image.shape[:2], bool)
    border[1:-1, 1:-1] = False
    return np.median(image[border], axis=0)


def _pixel_counts(fraction: np.ndarray, pixels: int) -> np.ndarray:
    """(N,) shares in [0, 1] -> (N,) int: how many of `pixels` to erase."""
    return np.clip(np.round(np.asarray(fraction, np.float64) * pixels), 0, pixels).astype(int)


def _top_pixels(map_: np.ndarray, size: tuple[int, int], count: int, rng) -> np.ndarray:
    """(h,w) -> (H,W) bool: the `count` pixels the map, upsampled to `size`, ranks highest.

    Ties are broken at random, so a flat map erases random pixels, not the first rows.
    """
    height, width = size
    up = cv2.resize(np.asarray(map_, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    order = np.lexsort((rng.random(up.size), -up.reshape(-1)))
    mask = np.zeros(up.size, bool)
    mask[order[:count]] = True
    return mask.reshape(height, width)


def _random_rectangle(size: tuple[int, int], count: int, rng) -> np.ndarray:
    """(H,W) -> (H,W) bool: `count` pixels forming a randomly placed, near-square rectangle.

    A compact region, like the blob an upsampled smooth map ranks highest, so the two
    erasures differ in where they cut, not in shape. Its sides are about sqrt(count);
    the few pixels past `count` in its last row are left out, so the count is exact.
    """
    height, width = size
    mask = np.zeros(size, bool)
    if count == 0:
        return mask
    guess = max(1, round(math.sqrt(count)))
    cols = min(width, math.ceil(count / guess))
    rows = math.ceil(count / cols)  # <= height: cols == width or count / cols <= guess
    y0 = rng.integers(0, height - rows + 1)
    x0 = rng.integers(0, width - cols + 1)
    block = np.zeros(rows * cols, bool)
    block[:count] = True
    mask[y0 : y0 + rows, x0 : x0 + cols] = block.reshape(rows, cols)
    return mask


def _erase(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,H,W,C) pixels, (N,H,W) bool -> a copy with the masked pixels set to the background."""
    erased = np.array(images, np.float32, copy=True)
    for image, mask in zip(erased, masks, strict=True):
        image[mask] = background_value(image)
    return erased


def erase_regions(
    images: np.ndarray, maps: np.ndarray, fraction: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(N,H,W,C) pixels, (N,h,w) maps, (N,) shares -> (top, random), each (N,H,W,C) float32.

    `top`: the `fraction[i]` share of pixels the map (upsampled, INTER_LINEAR) ranks
    highest set to the image's background value (`background_value`). `random`: as
    many pixels, in a randomly placed near-square rectangle, set the same way: the
    baseline an erasure of that area costs wherever it falls.
    """
    images = np.asarray(images, np.float32)
    size = images.shape[1:3]
    counts = _pixel_counts(fraction, size[0] * size[1])
    top = np.stack([_top_pixels(m, size, k, rng) for m, k in zip(maps, counts, strict=True)])
    random = np.stack([_random_rectangle(size, k, rng) for k in counts])
    return _erase(images, top), _erase(images, random)


# --- the final measurement ------------------------------------------------------------------


def randomised_copy(model: keras.Model) -> keras.Model:
    """The same architecture with freshly initialised weights (BatchNorm statistics too).

    `keras.models.clone_model` builds new layers from their configs. Our layers seed
    their initializers from the run's seed and their name, so the copy holds exactly
    the weights training started from: "re-initialise the trained layers". Layers
    without a seed (a pretrained backbone's) get new random weights.
    """
    return keras.models.clone_model(model)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) == labels)) if len(labels) else float("nan")


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of `model` on (N,S,S,3) pixels with (N,) int labels.

    Through `model_maps`' compiled pass, so the final checks trace one function per
    model, not a second one for `predict`.
    """
    labels = np.asarray(labels, np.int32).reshape(-1)
    return _accuracy(model_maps(model, images, labels).logits, labels)


def _map_measures(name: str, maps, random_maps, boxes) -> dict[str, float]:
    return {
        f"pointing_{name}": _nanmean(pointing_game(maps, boxes)),
        f"auroc_{name}": _nanmean(map_auroc(maps, boxes)),
        f"sanity_{name}": _nanmean(rank_correlation(maps, random_maps)),
    }


def final_focus(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, boxes: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Every trust measure of one model, each averaged over the images (undefined ones left out).

    images (N,S,S,3) pixels as the model takes them, labels (N,) int, boxes (N,4). Keys:
    `focus_images`, `accuracy`, `pointing_chance`, `erase_random_drop`, and per map
    (`gradcam`; `attention` only with a spatial attention map): `pointing_*`,
    `auroc_*`, `sanity_*`, `erase_top_drop_*`. The erased area of each image is its
    box's area share; the drops are accuracy on the originals minus after erasing.
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32).reshape(-1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    # One pass per model gives its Grad-CAMs, attention maps and logits together.
    trained = model_maps(model, images, labels)
    randomised = model_maps(randomised_copy(model), images, labels)
    maps = {"gradcam": (trained.gradcam, randomised.gradcam)}
    if trained.attention is not None:
        maps["attention"] = (trained.attention, randomised.attention)
    base = _accuracy(trained.logits, labels)
    fraction = box_area_share(boxes)
    result = {
        "focus_images": len(labels),
        "accuracy": base,
        # On Grad-CAM's grid; the attention map's is the same for our backbones.
        "pointing_chance": _nanmean(pointing_chance(maps["gradcam"][0], boxes)),
    }
    for name, (trained_maps, random_maps) in maps.items():
        result.update(_map_measures(name, trained_maps, random_maps, boxes))
        # The same seed for every map: all of them are compared with one random erasure.
        rng = np.random.default_rng(seed)
        top, random = erase_regions(images, trained_maps, fraction, rng)
        result[f"erase_top_drop_{name}"] = base - accuracy(model, top, labels)
        if name == "gradcam":
            result["erase_random_drop"] = base - accuracy(model, random, labels)
    return result


def write_final_focus(path: str | os.PathLike, result: dict[str, float]) -> None:
    """Writes `final_focus`'s result as JSON, atomically (NaN stays NaN)."""
    atomic_write_json(path, result)


def read_final_focus(path: str | os.PathLike) -> dict[str, float] | None:
    """The result `write_final_focus` wrote, or None when there is no file."""
    return read_json(path)
