"""From a WLASL index to training inputs: scan clips, build the frozen encoder, cache features.

The training script, the tuner and the study all call `prepare_video_inputs`;
the frozen encoder's features are computed once per clip and cached on disk, so
every later epoch, trial and seed trains only the temporal head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_attn.data.features import DETERMINISTIC_MODES, FeatureCache, feature_dataset
from keras_attn.data.video import clip_dataset, read_clip_frames, scan_clips
from keras_attn.data.wlasl import WlaslIndex
from keras_attn.errors import UserError
from keras_attn.models.video import build_frame_encoder, build_video_model, calibrate_batchnorm

log = logging.getLogger(__name__)

CALIBRATION_CLIPS = 16


@dataclasses.dataclass
class VideoInputs:
    """What a video run trains on.

    `train(start_epoch, epochs)` and `val` yield `((x, mask), label)` batches,
    where x is cached features `(B,T,*feature_shape)` or, without the cache,
    frames `(B,T,S,S,3)`; `wrap_head(head)` turns a head on features into the
    model that takes x.
    """

    train: Callable[[int, int], tf.data.Dataset]
    val: tf.data.Dataset
    steps_per_epoch: int
    feature_shape: tuple[int, ...]
    wrap_head: Callable[[keras.Model], keras.Model]
    summary: dict


def prepare_video_inputs(
    index: WlaslIndex,
    num_frames: int = 8,
    sampling: str = "uniform",
    image_size: int = 224,
    backbone: str = "mobilenet_v2",
    weights: str = "auto",
    feature_maps: bool = False,
    crop_bbox: bool = False,
    feature_cache: bool = True,
    cache_dir: str | None = None,
    batch_size: int = 4,
    seed: int = 0,
) -> VideoInputs:
    """Scans the index's clips, builds the frozen encoder and the datasets.

    Features are cached unless `feature_cache` is off or `sampling` is "random"
    (fresh frames every epoch); validation always samples deterministically.
    """
    train_records, train_skipped = scan_clips(index.train, crop_bbox=crop_bbox)
    val_records, val_skipped = scan_clips(index.val, crop_bbox=crop_bbox)
    for split, records in (("training", train_records), ("validation", val_records)):
        if not records:
            raise UserError(f"{index.index_file}: no readable {split} clip")
    encoder, weights_used = build_frame_encoder(backbone, image_size, weights, feature_maps)
    encoder_key = f"{backbone}-{weights_used}-{image_size}-{'map' if feature_maps else 'pooled'}"
    if weights_used == "random":
        encoder_key += "-" + _calibrate(encoder, train_records, num_frames, image_size, crop_bbox)
    val_mode = sampling if sampling in DETERMINISTIC_MODES else "uniform"
    summary = dict(
        index=index.to_summary(),
        skipped_files=train_skipped + val_skipped,
        backbone_weights_used=weights_used,
        frozen_backbone_is_random=weights_used == "random",
    )

    if feature_cache and sampling in DETERMINISTIC_MODES:
        cache = FeatureCache(cache_dir, encoder, encoder_key)
        train_x, train_m, train_y, train_stats = cache.features_for(
            train_records, num_frames, sampling, image_size, crop_bbox=crop_bbox
        )
        val_x, val_m, val_y, val_stats = cache.features_for(
            val_records, num_frames, val_mode, image_size, crop_bbox=crop_bbox
        )
        summary["skipped_files"] += train_stats["skipped"] + val_stats["skipped"]
        summary["feature_cache"] = {k: train_stats[k] + val_stats[k] for k in ("hits", "misses")}
        print(
            f"Frozen features: {summary['feature_cache']['hits']} clips from the cache, "
            f"{summary['feature_cache']['misses']} computed ({cache.directory})"
        )
        return VideoInputs(
            train=lambda start, end: feature_dataset(
                train_x, train_m, train_y, batch_size, seed, True, start, end
            ),
            val=feature_dataset(val_x, val_m, val_y, batch_size, seed, False),
            steps_per_epoch=-(-len(train_y) // batch_size),
            feature_shape=tuple(train_x.shape[2:]),
            wrap_head=lambda head: head,
            summary=summary,
        )

    summary["feature_cache"] = "off"
    return VideoInputs(
        train=lambda start, end: clip_dataset(
            train_records,
            num_frames,
            sampling,
            image_size,
            seed,
            True,
            batch_size,
            crop_bbox,
            start,
            end,
        ),
        val=clip_dataset(
            val_records, num_frames, val_mode, image_size, seed, False, batch_size, crop_bbox
        ),
        steps_per_epoch=-(-len(train_records) // batch_size),
        feature_shape=tuple(encoder.output.shape[1:]),
        wrap_head=lambda head: build_video_model(encoder, head, num_frames),
        summary=summary,
    )


def _calibrate(encoder, records, num_frames, image_size, crop_bbox) -> str:
    """Calibrates a random encoder on the first training clips; returns their identity."""
    chosen = records[:CALIBRATION_CLIPS]
    frames = np.concatenate(
        [
            read_clip_frames(r, num_frames, "uniform", image_size, crop_bbox=crop_bbox)[0]
            for r in chosen
        ]
    )
    calibrate_batchnorm(encoder, frames)
    # File identities too: recalibrating on changed clips must not reuse old features.
    ids = "|".join(
        f"{r.path}:{os.stat(r.path).st_size}:{os.stat(r.path).st_mtime_ns}" for r in chosen
    )
    return "calib-" + hashlib.sha256(ids.encode()).hexdigest()[:12]
