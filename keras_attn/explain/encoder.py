"""A video run's frozen frame encoder, rebuilt from its `config.json`.

With the feature cache (the default) `best.keras` is only the head on cached features, so
going from an `.mp4` to a prediction needs the encoder that made them. It is rebuilt with
the builder training used (`build_frame_encoder`: backbone, weights, frame side, pooled
features or feature maps, in the run's precision) and checked against what the run
recorded: `summary.json`'s `frame_encoder` record (name, weights) where the run has one,
else its `backbone_weights_used`. A random encoder's BatchNorm statistics were calibrated on the
run's first training clips; they are calibrated again on the same clips, the same way.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import keras

from keras_attn.data.video import VideoDecodeError, check_clip
from keras_attn.data.wlasl import ClipRecord, WlaslIndex
from keras_attn.errors import UserError
from keras_attn.experiments import video as video_experiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.training import acceleration


def run_index(spec: VideoExperiment, run_dir: Path | None) -> WlaslIndex:
    """The run's clip index, selected as `load_video_data` selects it (UserError if unreadable).

    `data_dir` is relative to where training ran: tried as given, then under each folder
    above the run directory (`runs/video/<run>` sits three levels below it).
    """
    return video_experiment.load_index(spec, _find_data_dir(spec.data_dir, run_dir))


def _find_data_dir(data_dir: str | None, run_dir: Path | None) -> Path:
    if not data_dir:
        raise UserError("the run's config.json names no data_dir")
    path = Path(data_dir)
    if path.is_dir() or path.is_absolute() or run_dir is None:
        return path
    for parent in Path(run_dir).resolve().parents:
        if (parent / path).is_dir():
            return parent / path
    return path


def rebuild_frame_encoder(
    spec: VideoExperiment, summary: dict, index: WlaslIndex | None
) -> keras.Model:
    """The run's encoder: `(N,S,S,3)` pixels in [0, 255] -> `(N,D)` (`(N,h,w,C)` for maps).

    Raises UserError when it cannot be rebuilt or is not the one the run recorded.
    """
    size = spec.resolved_image_size()
    encoder, used = video_experiment.frame_encoder(
        spec.backbone,
        size,
        spec.backbone_weights,
        feature_maps=spec.frame_attention != "none",
        precision=acceleration.resolve_precision(spec.mixed_precision, spec.BF16_PAYS_ON_CPU)[0],
    )
    check_recorded(summary, spec.backbone, used)
    if used == "random":
        if index is None:
            raise UserError(
                "the run's frame encoder is random, with BatchNorm statistics from its training "
                "clips, and its index cannot be read, so it cannot be rebuilt"
            )
        records = _first_readable(as_sampled(spec, index).train, spec.crop_bbox)
        video_experiment._calibrate(encoder, records, spec.num_frames, size, spec.crop_bbox)
    return encoder


def check_recorded(summary: dict, backbone: str, used: str) -> None:
    """Raises UserError unless the rebuilt encoder (`backbone`, weights `used`) is the run's."""
    record = summary.get("frame_encoder")
    if isinstance(record, dict):
        expected = {"name": (backbone, f"{backbone}_encoder"), "weights": (used,)}
        for key, accepted in expected.items():
            if key in record and record[key] not in accepted:
                raise UserError(
                    f"the run's frame encoder has {key} {record[key]!r}; rebuilt from its "
                    f"config.json it has {accepted[0]!r}"
                )
        return
    recorded = summary.get("backbone_weights_used")
    if recorded is not None and recorded != used:
        raise UserError(
            f"the run's frame encoder used weights {recorded!r}; rebuilt from its config.json "
            f"it has {used!r} (weights file changed or missing?)"
        )


def as_sampled(spec: VideoExperiment, index: WlaslIndex) -> WlaslIndex:
    """The index as training sampled it: over whole files with `frame_range` "clip"."""
    return index.over_whole_clips() if spec.frame_range == "clip" else index


def _first_readable(records: list[ClipRecord], crop_bbox: bool) -> list[ClipRecord]:
    """The first `CALIBRATION_CLIPS` readable records, each with its verified frame count.

    The same clips `scan_clips` keeps first, in the same order, without scanning the rest.
    """
    wanted = video_experiment.CALIBRATION_CLIPS
    readable = []
    for record in records:
        try:
            count = check_clip(record, crop_bbox=crop_bbox)
        except VideoDecodeError:
            continue
        readable.append(dataclasses.replace(record, frame_count=count))
        if len(readable) == wanted:
            break
    if not readable:
        raise UserError("no readable training clip to calibrate the random frame encoder on")
    return readable


def records_by_path(index: WlaslIndex | None) -> dict[str, ClipRecord]:
    """Every clip of the index (train, val, test) by its real path."""
    if index is None:
        return {}
    clips = [*index.train, *index.val, *index.test]
    return {os.path.realpath(record.path): record for record in clips}
