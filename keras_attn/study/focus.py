"""Where do the models look? Attention focus measured against known target locations.

Images: the share of a map's mass inside the target box, for Grad-CAM and for the
deepest spatial attention map, against the box's area (the share of a uniform map).
Video: the share of the temporal module's frame weights on frames inside the sign,
against the share of valid frames inside it.

Both callbacks write their figures into the epoch's `logs`, so callbacks after them
(CSV history, TensorBoard) record them too: list them first.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import weakref
from pathlib import Path
from typing import NamedTuple

import cv2
import keras
import matplotlib
import numpy as np
import tensorflow as tf

from keras_attn.layers import IdentityAttention
from keras_attn.models import attention_layers, attention_model
from keras_attn.models.attention import spatial_map_name
from keras_attn.training.files import atomic_write_bytes

BATCH_SIZE = 64
# The overlay strip shows this many of the images; the measurements use all of them.
STRIP_IMAGES = 8
BOX_COLOUR = (255, 255, 255)


# --- measurements -----------------------------------------------------------------------


def _cell_coverage(start: np.ndarray, end: np.ndarray, cells: int) -> np.ndarray:
    """(N,) interval ends in [0, 1] -> (N, cells): the fraction of each cell the interval covers."""
    edges = np.arange(cells + 1) / cells
    low = np.maximum(edges[None, :-1], start[:, None])
    high = np.minimum(edges[None, 1:], end[:, None])
    return np.clip(high - low, 0.0, None) * cells


def box_mass_share(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Share of each map's mass inside its box: maps (N,h,w) >= 0, boxes (N,4) -> (N,).

    Boxes are normalised (y0, x0, y1, x1); cell (i, j) spans [i/h, (i+1)/h) x
    [j/w, (j+1)/w) and counts with the fraction of its area inside the box. A map
    without mass gives NaN.
    """
    maps = np.asarray(maps, np.float64)
    boxes = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0.0, 1.0)
    rows = _cell_coverage(boxes[:, 0], boxes[:, 2], maps.shape[1])
    cols = _cell_coverage(boxes[:, 1], boxes[:, 3], maps.shape[2])
    inside = np.einsum("nhw,nh,nw->n", maps, rows, cols)
    total = maps.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def box_area_share(boxes: np.ndarray) -> np.ndarray:
    """(N,4) normalised (y0, x0, y1, x1) -> (N,): the box's share of the image (chance level)."""
    boxes = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0.0, 1.0)
    heights = np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None)
    widths = np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)
    return heights * widths


def _nanmean(values: np.ndarray) -> float:
    """Mean of the defined values; NaN (without numpy's warning) when there are none."""
    values = np.asarray(values, np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _batches(n: int):
    for start in range(0, n, BATCH_SIZE):
        yield slice(start, min(start + BATCH_SIZE, n))


# Per model and layer, the compiled pass of `model_maps`: traced once per run, not per epoch.
_MAP_PASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _RetracingWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_retracing_warning():
    """Drops TF's retracing warning, and only it, while Grad-CAMs run."""
    logger, quiet = tf.get_logger(), _RetracingWarningFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class ModelMaps(NamedTuple):
    """What one pass of a model over (N,S,S,3) images gives (`model_maps`)."""

    gradcam: np.ndarray  # (N,h,w) float32, >= 0
    attention: np.ndarray | None  # (N,h,w) float32 in [0, 1]; None without a spatial map
    logits: np.ndarray  # (N,K) float32: what `model.predict` gives


def _spatial_map_of(model: keras.Model, probe: keras.Model) -> str | None:
    """The name of the deepest attention block's spatial map among `probe`'s outputs, or
    None: no attention block, IdentityAttention (its map of ones says nothing), or a
    block that only weights channels."""
    layers = attention_layers(model)
    if not layers or isinstance(layers[-1], IdentityAttention):
        return None
    name = spatial_map_name(layers[-1].name)
    return name if name in probe.output else None


def _compiled_pass(model: keras.Model, layer_name: str):
    """`maps_of(x, y) -> (cam, attention, logits)`, compiled: one trace per model gives the
    Grad-CAM, the attention map and the logits of one forward pass (an empty attention
    tensor without a map). Compiled also because eager Conv2DBackpropFilter in TF 2.21's
    oneDNN can abort the process (free(): invalid pointer) for narrow convolutions at some
    batch sizes (first stage 4 or 8 channels wide, batches of 1 or 3)."""
    passes = _MAP_PASSES.setdefault(model, {})
    if layer_name in passes:
        return passes[layer_name]
    probe = attention_model(model, feature_layer=layer_name)
    map_name = _spatial_map_of(model, probe)

    def maps_of(x, y):
        with tf.GradientTape() as tape:
            outputs = probe(x, training=False)
            features, logits = outputs["features"], outputs["logits"]
            target = tf.gather(logits, y, axis=1, batch_dims=1)
        # The gradient is taken in float32 even under mixed precision.
        gradients = tf.cast(tape.gradient(target, features), tf.float32)
        alpha = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(alpha * tf.cast(features, tf.float32), axis=-1))
        if map_name is None:
            attention = tf.zeros((tf.shape(x)[0], 0, 0), tf.float32)
        else:
            attention = tf.cast(outputs[map_name][..., 0], tf.float32)
        return cam, attention, tf.cast(logits, tf.float32)

    # One signature with a free batch size: one trace per model, whatever the batch. A
    # study still traces one per model (each run, each sanity-check copy), which TF's
    # frequent-retracing detector reports as a warning meant for functions made in a loop.
    signature = [
        tf.TensorSpec((None, *model.input_shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    ]
    passes[layer_name] = (tf.function(maps_of, input_signature=signature), map_name)
    return passes[layer_name]


def model_maps(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, layer_name: str = "pool"
) -> ModelMaps:
    """Grad-CAM of the true class, the deepest spatial attention map and the logits of
    (N,S,S,3) images with (N,) int labels, from one compiled pass per batch.

    Grad-CAM is relu(sum_c alpha_c A_c) with alpha_c the spatial mean of d logit / d A_c
    (Selvaraju et al., "Grad-CAM", ICCV 2017), taken on the input A (B,h,w,C) of
    `layer_name` (`"pool"`: the last feature map). A, the attention map and the logits
    come from the model's own graph (`attention_model`), so they are exactly what the
    classifier computes. The attention map is None when the model has no attention block,
    when it is IdentityAttention (its map of ones says nothing) or when it only weights
    channels.
    """
    labels = np.asarray(labels, np.int32).reshape(-1)
    maps_of, map_name = _compiled_pass(model, layer_name)
    with _quiet_retracing_warning():
        batches = [
            [t.numpy() for t in maps_of(tf.constant(images[b], tf.float32), labels[b])]
            for b in _batches(len(labels))
        ]
    if not batches:
        return ModelMaps(np.zeros((0, 0, 0), np.float32), None, np.zeros((0, 0), np.float32))
    cams, attention, logits = (np.concatenate(parts) for parts in zip(*batches, strict=True))
    return ModelMaps(cams, None if map_name is None else attention, logits)


def grad_cam(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, layer_name: str = "pool"
) -> np.ndarray:
    """Grad-CAM of the true class on the input of `layer_name`: (N,S,S,3), (N,) -> (N,h,w).

    `model_maps(...).gradcam`; see there.
    """
    return model_maps(model, images, labels, layer_name).gradcam


# --- overlays ---------------------------------------------------------------------------


def _box_pixels(box: np.ndarray, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Normalised (y0, x0, y1, x1) -> the outline's corners in (x, y) pixels for cv2."""
    y0, x0, y1, x1 = (int(round(float(v) * size)) for v in np.clip(box, 0.0, 1.0))
    # cv2 draws inclusive corners, so the far edge is the last covered pixel.
    return (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0))


def _heat(map_: np.ndarray, size: int) -> np.ndarray:
    """(h,w) -> (size,size,3) float in [0, 255]: upsampled, min-max normalised, coloured."""
    up = cv2.resize(np.asarray(map_, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    low, high = float(up.min()), float(up.max())
    # A flat map carries no location, so it is shown as the colormap's bottom colour.
    norm = (up - low) / (high - low) if high > low else np.zeros_like(up)
    return matplotlib.colormaps["jet"](norm)[..., :3] * 255.0


def _tile(image: np.ndarray, box: np.ndarray, map_: np.ndarray | None) -> np.ndarray:
    """(S,S,3) uint8 -> (S,S,3) uint8: the image, 50/50 with the map's heat if any, boxed."""
    size = image.shape[0]
    tile = image.astype(np.float32)
    if map_ is not None:
        tile = 0.5 * tile + 0.5 * _heat(map_, size)
    tile = np.ascontiguousarray(np.clip(tile, 0, 255).astype(np.uint8))
    cv2.rectangle(tile, *_box_pixels(box, size), BOX_COLOUR, 1)
    return tile


def _label(row: np.ndarray, text: str) -> None:
    # Black under white keeps the label readable on any image.
    for colour, thickness in (((0, 0, 0), 2), ((255, 255, 255), 1)):
        cv2.putText(row, text, (2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, colour, thickness)


def overlay_strip(
    images: np.ndarray, rows: list[tuple[str, np.ndarray | None]], boxes: np.ndarray
) -> np.ndarray:
    """A grid of overlays: uint8 images (N,S,S,3) -> uint8 ((1 + R) * S, N * S, 3).

    The first row shows the images with their boxes; then one row per `(label,
    maps (N,h,w))` in `rows` with the maps over the images (rows whose maps are
    None are left out).
    """
    images = np.asarray(images, np.uint8)
    shown = [("image", None)] + [(label, maps) for label, maps in rows if maps is not None]
    strip = []
    for label, maps in shown:
        tiles = [
            _tile(image, box, None if maps is None else maps[i])
            for i, (image, box) in enumerate(zip(images, boxes, strict=True))
        ]
        row = np.ascontiguousarray(np.concatenate(tiles, axis=1))
        _label(row, label)
        strip.append(row)
    return np.concatenate(strip, axis=0)


# --- files ------------------------------------------------------------------------------


def _write(path: str | os.PathLike, data: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Writes an RGB uint8 image (H,W,3) as a PNG, atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    _write(path, encoded.tobytes())


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Writes arrays to an .npz file, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _write(path, buffer.getvalue())


# --- callbacks --------------------------------------------------------------------------


class ImageFocus(keras.callbacks.Callback):
    """Adds `focus_gradcam`, `focus_attention` and `focus_chance` to every epoch's logs.

    Each is a mean over the images of the share of a map's mass inside the target
    box: Grad-CAM of the true class, the deepest spatial attention map (absent
    without one), and a uniform map. Every `image_every` epochs and at the last,
    an overlay strip goes to TensorBoard (`log_dir/focus`) and to `png_path`.

    Args:
        images: (N,S,S,3) pixels in [0, 255], as the model takes them.
        labels: (N,) int class indices.
        boxes: (N,4) normalised target boxes (y0, x0, y1, x1).
    """

    def __init__(self, images, labels, boxes, log_dir, image_every=5, png_path=None):
        super().__init__()
        self.images = np.asarray(images, np.float32)
        self.labels = np.asarray(labels, np.int32).reshape(-1)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.log_dir = str(log_dir)
        self.image_every = int(image_every)
        self.png_path = None if png_path is None else str(png_path)
        self._writer = None

    def __getstate__(self):
        # Keras Tuner deep-copies callbacks, and a summary writer cannot be copied.
        return {**self.__dict__, "_writer": None}

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        cams, attention, _ = model_maps(self.model, self.images, self.labels)
        logs["focus_gradcam"] = _nanmean(box_mass_share(cams, self.boxes))
        if attention is not None:
            logs["focus_attention"] = _nanmean(box_mass_share(attention, self.boxes))
        logs["focus_chance"] = float(box_area_share(self.boxes).mean())
        if self._draws(epoch):
            self._write_strip(epoch, [("attention", attention), ("grad-cam", cams)])

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _draws(self, epoch: int) -> bool:
        last = (self.params or {}).get("epochs")
        return (epoch + 1) % max(self.image_every, 1) == 0 or epoch + 1 == last

    def _write_strip(self, epoch: int, rows) -> None:
        n = min(STRIP_IMAGES, len(self.images))
        shown = [(label, None if maps is None else maps[:n]) for label, maps in rows]
        pixels = np.clip(self.images[:n], 0, 255).astype(np.uint8)
        strip = overlay_strip(pixels, shown, self.boxes[:n])
        if self._writer is None:
            # Made here, not in __init__, so the callback stays deep-copyable until training.
            self._writer = tf.summary.create_file_writer(str(Path(self.log_dir) / "focus"))
        with self._writer.as_default():
            tf.summary.image("focus/overlays", strip[None], step=epoch + 1)
        self._writer.flush()
        if self.png_path:
            save_png(self.png_path, strip)


def temporal_weights(model: keras.Model, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The temporal module's frame weights: features (N,T,D), mask (N,T) bool -> (N,T).

    They are the `temporal_weights` tensor of the model's own graph (`attention_model`).
    """
    probe = attention_model(model)
    if "temporal_weights" not in probe.output:
        raise ValueError(f"{model.name} has no temporal module named 'temporal'")
    mask = np.asarray(mask, bool)
    weights = []
    for b in _batches(len(mask)):
        outputs = probe([np.asarray(features[b], np.float32), mask[b]], training=False)
        weights.append(keras.ops.convert_to_numpy(outputs["temporal_weights"]))
    return np.concatenate(weights).astype(np.float32)


def in_sign_share(weights: np.ndarray, in_sign: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N,T) each -> (N,): the share of each clip's valid-frame weight inside the sign."""
    valid = np.asarray(weights, np.float64) * np.asarray(mask, bool)
    total = valid.sum(axis=1)
    inside = (valid * np.asarray(in_sign, bool)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


class TemporalFocus(keras.callbacks.Callback):
    """Adds `focus_temporal` and `focus_temporal_chance` to every epoch's logs.

    `focus_temporal`: mean over clips of the share of the temporal module's frame
    weights on frames inside the sign; `focus_temporal_chance`: the same for
    uniform weights over the valid frames. At the end of training the frame
    weights are saved to `npz_path` (`weights`, `in_sign`, `mask`), if given.

    Args:
        features: (N,T,D) float32 frame features.
        mask: (N,T) bool, True on valid frames.
        in_sign: (N,T) bool, True where the frame lies inside the annotated sign.
    """

    def __init__(self, features, mask, in_sign, npz_path=None):
        super().__init__()
        self.features = np.asarray(features, np.float32)
        self.mask = np.asarray(mask, bool)
        self.in_sign = np.asarray(in_sign, bool)
        self.npz_path = None if npz_path is None else str(npz_path)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        weights = temporal_weights(self.model, self.features, self.mask)
        logs["focus_temporal"] = _nanmean(in_sign_share(weights, self.in_sign, self.mask))
        uniform = np.ones(self.mask.shape, np.float32)
        logs["focus_temporal_chance"] = _nanmean(in_sign_share(uniform, self.in_sign, self.mask))

    def on_train_end(self, logs=None):
        if self.npz_path:
            weights = temporal_weights(self.model, self.features, self.mask)
            save_npz(self.npz_path, weights=weights, in_sign=self.in_sign, mask=self.mask)
