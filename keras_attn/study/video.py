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
from keras_attn.data.wlasl import WlaslIndex
from keras_attn.errors import UserError
from keras_attn.experiments.video import VideoData, video_model_builder, video_run
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


def temporal_focus_frames(data: VideoData, settings: dict) -> np.ndarray | None:
    """The in-sign mask of the validation frames, or None when focus cannot be scored
    (features not cached, or frame attention on feature maps)."""
    if data.inputs.val_clips is None or settings["frame_attention"] != "none":
        return None
    return in_sign_frames(data.inputs.val_clips, data.index)


def video_runner(settings: dict, data: VideoData):
    """`run_one(variant, seed, run_dir)` for the grid: one video run under `settings`."""
    index, inputs = data.index, data.inputs
    in_sign = temporal_focus_frames(data, settings)

    def run_one(variant: str, seed: int, run_dir: Path) -> dict:
        run_settings = {**settings, "temporal": variant, "seed": seed}
        cfg = train_config(run_settings)
        config, _ = video_run(run_settings, data.data_dir, data.image_size)
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
