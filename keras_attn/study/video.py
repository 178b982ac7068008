"""The video study: temporal modules compared over seeds on the same cached frozen features.

The frozen encoder's features are computed once (and cached on disk), so every
variant and seed trains only its temporal head on identical inputs. By default
frames are sampled over the whole clip, lead-in and tail included, so that the
temporal weights can be scored against the annotated sign range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_attn.cli import train_config
from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.wlasl import WlaslIndex, load_wlasl
from keras_attn.errors import UserError
from keras_attn.experiments.video import (
    VideoInputs,
    prepare_video_inputs,
    video_model_builder,
    video_run,
)
from keras_attn.layers import temporal_names
from keras_attn.study.focus import TemporalFocus
from keras_attn.training.run import run_training


def in_sign_frames(val_clips: dict, sign_index: WlaslIndex) -> np.ndarray:
    """`(N, T)` bool: whether each sampled validation frame lies in its clip's annotated sign.

    `sign_index` holds the annotated ranges (0-based, inclusive; an open end runs to
    the last frame); `val_clips` the sampled frames' numbers in each file.
    """
    ranges = {r.video_id: (r.frame_start, r.frame_end) for r in sign_index.val}
    rows = []
    for record, frames in zip(val_clips["records"], val_clips["frame_indices"], strict=True):
        start, end = ranges[record.video_id]
        end = np.iinfo(np.int32).max if end is None else end
        rows.append((frames >= start) & (frames <= end))
    return np.asarray(rows, dtype=bool).reshape(val_clips["mask"].shape)


def load_study_videos(settings: dict) -> tuple[WlaslIndex, VideoInputs, np.ndarray | None, dict]:
    """The index, the inputs (features cached once for every run) and the in-sign mask."""
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
    sampled = index.over_whole_clips() if settings["frame_range"] == "clip" else index
    inputs = prepare_video_inputs(
        sampled,
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
    in_sign = None
    if inputs.val_clips is not None and settings["frame_attention"] == "none":
        in_sign = in_sign_frames(inputs.val_clips, index)
    return index, inputs, in_sign, dict(data_dir=str(data_dir), image_size=image_size)


def video_runner(settings: dict, index: WlaslIndex, inputs: VideoInputs, in_sign, where: dict):
    """`run_one(variant, seed, run_dir)` for the grid: one video run under `settings`."""

    def run_one(variant: str, seed: int, run_dir: Path) -> dict:
        run_settings = {**settings, "temporal": variant, "seed": seed}
        cfg = train_config(run_settings)
        config, _ = video_run(run_settings, where["data_dir"], where["image_size"])
        seeded = inputs.with_seed(seed)
        measures = []
        if in_sign is not None:
            clips = inputs.val_clips
            measures.append(
                TemporalFocus(
                    clips["features"],
                    clips["mask"],
                    in_sign,
                    npz_path=run_dir / "temporal_weights.npz",
                )
            )
        return run_training(
            video_model_builder(run_settings, seeded, len(index.class_names)),
            seeded.train,
            seeded.val,
            seeded.steps_per_epoch,
            cfg,
            run_dir,
            config,
            summary_extra=dict(class_names=index.class_names, **inputs.summary),
            measure_callbacks=measures,
            progress_bar=False,
        )

    return run_one


def check_variants(variants) -> None:
    for variant in variants:
        if variant not in temporal_names():
            raise UserError(
                f"unknown temporal module '{variant}'; valid: {', '.join(temporal_names())}"
            )
