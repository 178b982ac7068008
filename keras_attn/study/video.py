"""The video study: temporal modules compared over seeds on the same cached frozen features.

The frozen encoder's features are computed once (and cached on disk), so every
variant and seed trains only its temporal head on identical inputs. By default
frames are sampled over the whole clip, lead-in and tail included, so that the
temporal weights can be scored against the annotated sign range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_attn.data.wlasl import WlaslIndex
from keras_attn.experiments import video as video_experiment
from keras_attn.experiments.video import VideoData, VideoExperiment
from keras_attn.study.focus import TemporalFocus
from keras_attn.study.grid import variant_settings
from keras_attn.training.config import TrainingSpec


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


def temporal_focus_frames(data: VideoData, spec: VideoExperiment) -> np.ndarray | None:
    """The in-sign mask of the validation frames, or None when focus cannot be scored
    (features not cached, or frame attention on feature maps)."""
    if data.inputs.val_clips is None or spec.frame_attention != "none":
        return None
    return in_sign_frames(data.inputs.val_clips, data.index)


# Settings of the temporal head and of training: a grid axis over them reuses the loaded
# clips and cached features; any other axis (frames, encoder, data) loads its own, and so
# does one over mixed_precision (the encoder computes in the run's precision).
HEAD_SETTINGS = ("temporal", "temporal_pool", "width", "tcn_kernel", "tcn_levels", "dropout")


def _data_key(spec: VideoExperiment) -> tuple:
    ignored = (set(HEAD_SETTINGS) | set(TrainingSpec.names())) - {"mixed_precision"}
    return tuple(sorted((k, str(v)) for k, v in spec.config().items() if k not in ignored))


def video_runner(base: VideoExperiment, data: VideoData):
    """`run_one(variant, seed, run_dir, **settings)` for the grid: one video run of `base`
    with that temporal module, seed and axis values."""
    loaded = {_data_key(base): data}

    def run_one(variant: str, seed: int, run_dir: Path, **settings) -> dict:
        fixed = variant_settings(VideoExperiment, "temporal", variant)
        spec = base.replace(**fixed, seed=seed, **settings)
        key = _data_key(spec)
        if key not in loaded:
            loaded.clear()  # one data set in memory at a time
            loaded[key] = video_experiment.load_video_data(spec)
        data = loaded[key]
        in_sign = temporal_focus_frames(data, spec)
        measures = []
        if in_sign is not None:
            clips = data.inputs.val_clips
            measures.append(
                TemporalFocus(
                    clips["features"],
                    clips["mask"],
                    in_sign,
                    npz_path=run_dir / "temporal_weights.npz",
                )
            )
        return video_experiment.train(
            spec,
            data,
            run_dir,
            measure_callbacks=measures,
            progress_bar=False,
        )

    return run_one
