"""Frozen-encoder feature cache: encode each clip's frames once, train the temporal head on them.

A frozen frame encoder (a `keras.Model` mapping `(N, S, S, 3)` float RGB in [0, 255] to `(N, D)`
or a feature map `(N, h, w, C)`, preprocessing included) is the expensive part of a video run.
`FeatureCache.features_for` decodes the clips that are not cached yet in parallel, runs their
frames through the encoder in batches stacked across clips, and stores one file per clip:

    <cache_dir>/<sha256(encoder_key)[:16]>/<clip key>.npz   (features, mask, frame_indices)

The clip key is the sha256 of: `encoder_key` (the caller's name for the encoder: backbone,
weights identity such as "imagenet" or a weights file's sha256, input size, output kind, the
compute precision when not float32), the video's absolute path, size and mtime_ns, the clip's
frame range, the number of frames, the sampling mode, the image size, the crop box (when
cropping) and `CACHE_FORMAT`. Those determine the decoded frame indices, so a hit needs no
video decoding at all; the indices and mask are stored with the features. Bump
`CACHE_FORMAT` when decoding or sampling rules change. Files are written atomically
(`keras_attn.files.atomic_write`); an unreadable cache file counts as a miss and is
rewritten. Features are stored as float32, so cached and freshly computed features agree
exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from keras_attn.data.order import epoch_dataset
from keras_attn.data.video import VideoDecodeError, ordered_map, read_clip_frames
from keras_attn.files import atomic_write

if TYPE_CHECKING:
    import keras

    from keras_attn.data.wlasl import ClipRecord

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "data/cache/features"
DETERMINISTIC_MODES = ("center", "uniform")
CACHE_FORMAT = 1
# Frames per encoder call (whole clips, at least one). Measured by
# benchmarks/frame_encoding.py (benchmarks/RESULTS.md section 10, float32, 2-core AMD host):
# EfficientNet-Lite0 encodes fastest at 8 frames per call at 224 px and at 32 at 96 px; 16 is
# within 11% of the best at both (64, the value before, lost 26% at 224 px).
ENCODE_BATCH_FRAMES = 16


class FeatureCache:
    """Per-clip encoder features on disk, keyed by encoder, file identity and sampling.

    Args:
        cache_dir: root folder (None: `DEFAULT_CACHE_DIR`, "data/cache/features").
        encoder: frozen frame encoder, `(N, S, S, 3)` float [0, 255] -> `(N, ...)`.
        encoder_key: identifies the encoder's weights and output (see module doc); a different
            key never shares cache files.
        workers: decoding threads (default: `video.default_workers()`).

    Example:
        cache = FeatureCache("data/cache/features", encoder, "mobilenetv3small-imagenet-224-avg")
        x, mask, y, stats = cache.features_for(train_records, 8, "uniform", 224)
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike | None,
        encoder: keras.Model,
        encoder_key: str,
        workers: int | None = None,
    ):
        if not encoder_key:
            raise ValueError("encoder_key must name the encoder (backbone, weights, size, output)")
        self.cache_dir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR)
        self.encoder = encoder
        self.encoder_key = encoder_key
        self.workers = workers
        self.directory = self.cache_dir / _sha256(encoder_key)[:16]

    def clip_key(
        self, record: ClipRecord, num_frames: int, mode: str, image_size: int, crop_bbox: bool
    ) -> str:
        """The cache key of one clip (raises OSError if its video cannot be stat'ed)."""
        path = os.path.abspath(record.path)
        stat = os.stat(path)
        crop = [int(v) for v in record.bbox] if crop_bbox and record.bbox is not None else None
        payload = {
            "format": CACHE_FORMAT,
            "encoder_key": self.encoder_key,
            "path": path,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "frame_start": int(record.frame_start),
            "frame_end": None if record.frame_end is None else int(record.frame_end),
            "num_frames": int(num_frames),
            "mode": mode,
            "image_size": int(image_size),
            "crop": crop,
        }
        return _sha256(json.dumps(payload, sort_keys=True))

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def features_for(
        self,
        records: Sequence[ClipRecord],
        num_frames: int,
        mode: str,
        image_size: int,
        batch_frames: int = ENCODE_BATCH_FRAMES,
        crop_bbox: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Features of every readable clip, from the cache or computed (and then cached).

        Args:
            records: the clips; unreadable ones are skipped, logged and listed in the stats.
            num_frames, mode, image_size, crop_bbox: as in `video.read_clip_frames`; `mode`
                must be deterministic ("center" or "uniform").
            batch_frames: frames per encoder call (whole clips, at least one clip per call;
                the last call is padded to the same shape so the encoder traces once).

        Returns:
            `(features, masks, labels, stats)`: float32 `(N, T, ...)`, bool `(N, T)`, int32
            `(N,)` for the N readable clips in record order (labels stay aligned with
            features), and `{"hits", "misses", "skipped": [{"path", "reason"}], "kept",
            "frame_indices"}` with `hits + misses + len(skipped) == len(records)`; `kept`
            lists the N clips' positions in `records`, `frame_indices` `(N, T)` the sampled
            frames' numbers in each file (0-based).
        """
        if mode not in DETERMINISTIC_MODES:
            raise ValueError(
                f"feature caching needs a deterministic sampling mode "
                f"({' or '.join(DETERMINISTIC_MODES)}), got {mode!r}"
            )
        records = list(records)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * len(records)
        skipped: list[tuple[int, dict]] = []  # (record index, {"path", "reason"})
        misses: list[tuple[int, str]] = []
        for i, record in enumerate(records):
            try:
                key = self.clip_key(record, num_frames, mode, image_size, crop_bbox)
            except FileNotFoundError:
                skipped.append((i, _skip(record.path, "file not found")))
                continue
            except OSError as err:
                skipped.append((i, _skip(record.path, f"cannot stat: {err.strerror or err}")))
                continue
            found[i] = self._load(key, num_frames)
            if found[i] is None:
                misses.append((i, key))
        hits = len(records) - len(misses) - len(skipped)

        def decode(item):
            i, key = item
            try:
                frames, mask, indices = read_clip_frames(
                    records[i], num_frames, mode, image_size, crop_bbox=crop_bbox
                )
            except VideoDecodeError as err:
                return i, key, err
            return i, key, (frames, mask, indices)

        clips_per_call = max(1, int(batch_frames) // int(num_frames))
        batch: list[tuple[int, str, tuple]] = []
        computed = 0
        for i, key, result in ordered_map(decode, misses, self.workers):
            if isinstance(result, VideoDecodeError):
                skipped.append((i, _skip(result.path, result.reason)))
                continue
            batch.append((i, key, result))
            if len(batch) == clips_per_call:
                computed += self._encode_and_store(batch, clips_per_call, found)
                batch = []
        if batch:
            computed += self._encode_and_store(batch, clips_per_call, found)

        keep = [i for i, item in enumerate(found) if item is not None]
        indices = np.array([found[i][2] for i in keep], dtype=np.int32).reshape(-1, num_frames)
        features, masks = _stack(found, keep, num_frames)
        labels = np.array([records[i].label for i in keep], dtype=np.int32)
        skipped_list = [entry for _, entry in sorted(skipped, key=lambda s: s[0])]
        stats = {"hits": hits, "misses": computed, "skipped": skipped_list}
        return features, masks, labels, {**stats, "kept": keep, "frame_indices": indices}

    def _encode_and_store(self, batch, clips_per_call: int, found: list) -> int:
        frames = np.concatenate([frames for _, _, (frames, _, _) in batch])
        num_frames = len(frames) // len(batch)
        full = clips_per_call * num_frames
        if len(frames) < full:  # same shape for every call: one trace of the encoder
            pad = np.repeat(frames[-1:], full - len(frames), axis=0)
            frames = np.concatenate([frames, pad])
        outputs = self.encoder.predict_on_batch(frames.astype(np.float32))
        if isinstance(outputs, (list, tuple, dict)):
            raise ValueError("the frame encoder must have a single output")
        outputs = np.asarray(outputs, dtype=np.float32)[: len(batch) * num_frames]
        outputs = outputs.reshape(len(batch), num_frames, *outputs.shape[1:])
        for (i, key, (_, mask, indices)), feats in zip(batch, outputs, strict=True):
            feats = np.ascontiguousarray(feats)
            found[i] = (feats, mask, indices)
            try:
                self._save(self.path_for(key), feats, mask, indices)
            except OSError as err:
                log.warning("could not write feature cache file for %s: %s", key, err)
        return len(batch)

    def _load(self, key: str, num_frames: int) -> tuple[np.ndarray, ...] | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                feats = np.asarray(data["features"], dtype=np.float32)
                mask = np.asarray(data["mask"], dtype=bool)
                indices = np.asarray(data["frame_indices"], dtype=np.int32)
        except Exception as err:  # any unreadable cache file is just a miss
            log.warning("ignoring unreadable feature cache file %s: %s", path, err)
            return None
        if feats.shape[:1] != (num_frames,) or mask.shape != (num_frames,):
            return None
        return feats, mask, indices

    def _save(self, path: Path, features: np.ndarray, mask: np.ndarray, indices: np.ndarray):
        path.parent.mkdir(parents=True, exist_ok=True)
        key_file = path.parent / "encoder_key.txt"
        if not key_file.exists():
            atomic_write(key_file, lambda f: f.write(self.encoder_key.encode() + b"\n"))
        # Not durable: a file lost to a power cut is a miss and is encoded again, which
        # costs less than a disk flush per clip.
        atomic_write(
            path,
            lambda f: np.savez(
                f, features=features.astype(np.float32), mask=mask, frame_indices=indices
            ),
            durable=False,
        )


def _stack(found: list, keep: list[int], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacks the kept clips into one array, releasing each per-clip array as it is copied."""
    masks = np.zeros((len(keep), num_frames), dtype=bool)
    if not keep:
        return np.zeros((0, num_frames), dtype=np.float32), masks
    features = np.empty((len(keep), *found[keep[0]][0].shape), dtype=np.float32)
    for row, i in enumerate(keep):
        features[row], masks[row] = found[i][:2]
        found[i] = None
    return features, masks


def _skip(path: str, reason: str) -> dict:
    log.warning("skipping unreadable clip %s: %s", path, reason)
    return {"path": str(path), "reason": reason}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def feature_dataset(
    features: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    training: bool,
    start_epoch: int = 0,
    epochs: int = 1,
) -> tf.data.Dataset:
    """In-memory batches `((features, mask), label)` in the same order rules as `clip_dataset`.

    Training covers epochs `start_epoch .. epochs - 1`, each shuffled by `[seed, epoch]` and
    batched on its own; evaluation is one pass in order. The arrays are indexed in numpy (no
    graph constants), so they may be large.
    """
    features = np.asarray(features, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    labels = np.asarray(labels, dtype=np.int32)
    if not len(features) == len(masks) == len(labels):
        raise ValueError(
            f"features, masks and labels differ in length: "
            f"{len(features)}, {len(masks)}, {len(labels)}"
        )
    feature_shape = (None, *features.shape[1:])
    mask_shape = (None, *masks.shape[1:])

    def take(indices):
        return features[indices], masks[indices], labels[indices]

    def batch_of(indices):
        x, mask, y = tf.numpy_function(
            take, [indices], [tf.float32, tf.bool, tf.int32], stateful=False
        )
        x = tf.ensure_shape(x, feature_shape)
        return (x, tf.ensure_shape(mask, mask_shape)), tf.ensure_shape(y, (None,))

    def build_epoch(indices, epoch):
        return indices.batch(batch_size).map(
            batch_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )

    ds = epoch_dataset(len(labels), seed, training, start_epoch, epochs, build_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)
