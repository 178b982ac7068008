"""From a WLASL index to training inputs: scan clips, build the frozen encoder, cache features.

The training script, the tuner and the study all call `prepare_video_inputs`;
the frozen encoder's features are computed once per clip and cached on disk, so
every later epoch, trial and seed trains only the temporal head.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_attn.cli import run_name
from keras_attn.data.features import DETERMINISTIC_MODES, FeatureCache, feature_dataset
from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.video import SAMPLING_MODES, clip_dataset, read_clip_frames, scan_clips
from keras_attn.data.wlasl import WlaslIndex, load_wlasl
from keras_attn.errors import UserError
from keras_attn.layers import temporal_names
from keras_attn.models.backbones import PRETRAINABLE
from keras_attn.models.video import (
    FRAME_ATTENTION,
    build_frame_encoder,
    build_video_head,
    build_video_model,
    calibrate_batchnorm,
)

log = logging.getLogger(__name__)

CALIBRATION_CLIPS = 16
FRAME_RANGES = ("sign", "clip")

# The original study's video settings: 8 frames, 10 glosses, batch 4, AdamW 1e-3, 20 epochs.
DEFAULTS = dict(
    data_dir=None,
    synthetic_clips_per_class=100,
    val_split="test",
    limit_classes=10,
    class_order="frequency",
    num_frames=8,
    sampling="uniform",
    frame_range="sign",
    crop_bbox=False,
    image_size=None,
    backbone="mobilenet_v2",
    backbone_weights="auto",
    feature_cache="on",
    cache_dir=None,
    temporal="tcn",
    temporal_pool="attention",
    frame_attention="none",
    width=128,
    dropout=0.5,
    epochs=20,
    batch_size=4,
    optimizer="adamw",
    lr=1e-3,
    weight_decay=1e-4,
    schedule="cosine",
    warmup_epochs=0.0,
    label_smoothing=0.0,
    loss="crossentropy",
    seed=0,
    deterministic=False,
    early_stopping=0,
    strategy="auto",
    # The head on cached features is tiny: per-step Python overhead would dominate.
    steps_per_execution=32,
    mixed_precision="auto",
    jit_compile="auto",
)
# Settings that say where a run goes or how to treat an old one, not what it computes.
NOT_IN_CONFIG = ("run_dir", "overwrite", "cache_dir")


def add_video_flags(parser: argparse.ArgumentParser, variants: bool = False) -> None:
    """The data and model flags of a video run (each defaults to None: see `DEFAULTS`).

    With `variants`, `--temporal` takes a comma-separated list (the study's grid).
    """
    data_flags = parser.add_argument_group("data")
    data_flags.add_argument(
        "--data-dir", help="WLASL folder: index file + videos/ (default: synthetic)"
    )
    data_flags.add_argument("--synthetic-clips-per-class", type=int, help="synthetic set size")
    data_flags.add_argument("--val-split", choices=("val", "test"), help="validate on this split")
    data_flags.add_argument(
        "--limit-classes", type=int, metavar="N", help="keep N glosses (0: all)"
    )
    data_flags.add_argument("--class-order", choices=("frequency", "alphabetical"))
    data_flags.add_argument("--num-frames", type=int, help="frames sampled per clip")
    data_flags.add_argument(
        "--sampling", choices=SAMPLING_MODES, help="where in the sign to sample"
    )
    data_flags.add_argument(
        "--crop-bbox", action="store_true", default=None, help="crop each frame to the signer's box"
    )
    data_flags.add_argument(
        "--frame-range",
        choices=FRAME_RANGES,
        help="sample within the annotated sign, or over the whole clip (lead-in and tail too)",
    )
    data_flags.add_argument("--image-size", type=int, help="frame side (default 96 synthetic, 224)")
    model_flags = parser.add_argument_group("model")
    model_flags.add_argument("--backbone", choices=PRETRAINABLE, help="frozen frame encoder")
    model_flags.add_argument("--backbone-weights", metavar="auto|imagenet|none|PATH")
    model_flags.add_argument(
        "--feature-cache", choices=("on", "off"), help="off: run the frozen encoder on every batch"
    )
    model_flags.add_argument(
        "--cache-dir", help="feature cache folder (default data/cache/features)"
    )
    if variants:
        model_flags.add_argument(
            "--temporal", metavar="|".join(temporal_names()), help="comma-separated variants"
        )
    else:
        model_flags.add_argument("--temporal", choices=temporal_names())
    model_flags.add_argument(
        "--temporal-pool", choices=("attention", "avg", "max", "last"), help="how tcn pools frames"
    )
    model_flags.add_argument(
        "--frame-attention",
        choices=FRAME_ATTENTION,
        help="spatial attention on each frame's feature map",
    )
    model_flags.add_argument("--width", type=int, help="per-frame projection and TCN width")
    model_flags.add_argument("--dropout", type=float)


@dataclasses.dataclass
class VideoData:
    """The selected clips (`index`, with the annotated sign ranges) and what runs train on."""

    index: WlaslIndex
    inputs: VideoInputs
    data_dir: str
    image_size: int


def load_video_data(settings: dict) -> VideoData:
    """The index (the synthetic set unless `data_dir`), scanned clips and frozen features.

    With `frame_range` "clip" the frames are sampled over whole files; the returned
    index keeps the annotated ranges.
    """
    if settings["num_frames"] < 1:
        raise UserError("--num-frames must be at least 1")
    data_dir = settings["data_dir"] or ensure_synthetic_videos(
        clips_per_class=settings["synthetic_clips_per_class"]
    )
    image_size = settings["image_size"] or (224 if settings["data_dir"] else 96)
    index = load_wlasl(
        data_dir, settings["val_split"], settings["limit_classes"] or None, settings["class_order"]
    )
    print(index.summary_line())
    inputs = prepare_video_inputs(
        index.over_whole_clips() if settings["frame_range"] == "clip" else index,
        settings["num_frames"],
        settings["sampling"],
        image_size,
        settings["backbone"],
        settings["backbone_weights"],
        feature_maps=settings["frame_attention"] != "none",
        crop_bbox=settings["crop_bbox"],
        feature_cache=settings["feature_cache"] == "on",
        cache_dir=settings["cache_dir"],
        batch_size=settings["batch_size"],
        seed=settings["seed"],
    )
    return VideoData(index, inputs, str(data_dir), image_size)


def video_run(settings: dict, data_dir, image_size: int) -> tuple[dict, str]:
    """The run's config (what `config.json` holds) and its default directory name."""
    config = {k: v for k, v in settings.items() if k not in NOT_IN_CONFIG}
    config.update(data_dir=str(data_dir), image_size=image_size)
    prefix = f"{os.path.basename(str(data_dir))}-{settings['temporal']}-seed{settings['seed']}"
    return config, run_name(prefix, config)


def video_model_builder(
    settings: dict, inputs: VideoInputs, num_classes: int
) -> Callable[[], keras.Model]:
    """The function that builds the run's model (called by `run_training` after seeding)."""

    def build_model() -> keras.Model:
        head = build_video_head(
            inputs.feature_shape,
            settings["num_frames"],
            num_classes,
            temporal=settings["temporal"],
            frame_attention=settings["frame_attention"],
            width=settings["width"],
            dropout=settings["dropout"],
            seed=settings["seed"],
            temporal_options=dict(filters=settings["width"], pool=settings["temporal_pool"]),
        )
        return inputs.wrap_head(head)

    return build_model


@dataclasses.dataclass
class VideoInputs:
    """What a video run trains on.

    `train(start_epoch, epochs)` and `val` yield `((x, mask), label)` batches,
    where x is cached features `(B,T,*feature_shape)` or, without the cache,
    frames `(B,T,S,S,3)`; `wrap_head(head)` turns a head on features into the
    model that takes x. With the feature cache, `val_clips` holds the validation
    set as arrays: `features (N,T,...)`, `mask (N,T)`, `labels (N,)`,
    `frame_indices (N,T)` (each sampled frame's number in its file) and `records`.
    """

    train: Callable[[int, int], tf.data.Dataset]
    val: tf.data.Dataset
    steps_per_epoch: int
    feature_shape: tuple[int, ...]
    wrap_head: Callable[[keras.Model], keras.Model]
    summary: dict
    val_clips: dict | None = None
    reseed: Callable[[int], Callable[[int, int], tf.data.Dataset]] | None = None

    def with_seed(self, seed: int) -> VideoInputs:
        """The same inputs with the training order of another seed (validation is fixed)."""
        return dataclasses.replace(self, train=self.reseed(seed))


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

        def cached_train(seed):
            return lambda start, end: feature_dataset(
                train_x, train_m, train_y, batch_size, seed, True, start, end
            )

        return VideoInputs(
            train=cached_train(seed),
            val=feature_dataset(val_x, val_m, val_y, batch_size, seed, False),
            steps_per_epoch=-(-len(train_y) // batch_size),
            feature_shape=tuple(train_x.shape[2:]),
            wrap_head=lambda head: head,
            summary=summary,
            val_clips=dict(
                features=val_x,
                mask=val_m,
                labels=val_y,
                frame_indices=val_stats["frame_indices"],
                records=[val_records[i] for i in val_stats["kept"]],
            ),
            reseed=cached_train,
        )

    summary["feature_cache"] = "off"

    def decoded_train(seed):
        return lambda start, end: clip_dataset(
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
        )

    return VideoInputs(
        train=decoded_train(seed),
        val=clip_dataset(
            val_records, num_frames, val_mode, image_size, seed, False, batch_size, crop_bbox
        ),
        steps_per_epoch=-(-len(train_records) // batch_size),
        feature_shape=tuple(encoder.output.shape[1:]),
        wrap_head=lambda head: build_video_model(encoder, head, num_frames),
        summary=summary,
        reseed=decoded_train,
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
