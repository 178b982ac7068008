"""Video models: the temporal module's frame weights over time, under a filmstrip of the frames.

A clip is read by the project's reader exactly as training read it: verified by
`check_clip`, then `read_clip_frames` with the run's frame count, deterministic sampling
mode (as validation uses), frame side and crop. A clip of the run's index keeps its
annotated range, which the plot shades; any other file is sampled over all its frames.
A head on cached features gets its frames through the rebuilt frame encoder (`encoder`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from keras_attn.data.features import DETERMINISTIC_MODES
from keras_attn.data.video import (
    VideoDecodeError,
    check_clip,
    read_clip_frames,
    resolve_frame_range,
)
from keras_attn.data.wlasl import ClipRecord
from keras_attn.errors import UserError
from keras_attn.experiments.video import VideoExperiment
from keras_attn.explain.encoder import (
    as_sampled,
    rebuild_frame_encoder,
    records_by_path,
    run_index,
)
from keras_attn.explain.figures import Explained, Failed, new_figure, overlay
from keras_attn.explain.inputs import unreadable
from keras_attn.explain.predictions import describe, softmax, top_k
from keras_attn.explain.source import ModelSource
from keras_attn.models import attention_model

# What OpenCV's bundled FFmpeg opens; WLASL and the synthetic set are .mp4.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")
FRAME_INCHES = 1.3
MAX_WIDTH_INCHES = 20.0
TITLE_CLASSES = 3


@dataclasses.dataclass
class Clip:
    """One clip as the model sees it: frames uint8 (T,S,S,3), mask bool (T,), the frames'
    numbers in the file (T,), the file's frame count and the annotated sign range
    (0-based inclusive, None outside the run's index)."""

    frames: np.ndarray
    mask: np.ndarray
    indices: np.ndarray
    frame_count: int
    sign: tuple[int, int] | None
    true_class: str | None


class VideoExplainer:
    """Explains clips with a video run's head (plus its rebuilt encoder) or end-to-end model."""

    def __init__(self, source: ModelSource, warn=print):
        if not source.config:
            raise UserError(
                f"{source.model_file}: a video model needs its run's config.json beside it "
                "(frames, sampling and frame encoder come from there)"
            )
        spec = VideoExperiment.from_dict(source.config)
        self.spec = spec
        self.class_names = source.class_names
        self.size = spec.resolved_image_size()
        self.num_frames = int(source.model.input_shape[0][1])
        # Validation's rule: a random sampling mode is for training only.
        self.mode = spec.sampling if spec.sampling in DETERMINISTIC_MODES else "uniform"
        try:
            index = run_index(spec, source.run_dir)
        except UserError as err:
            index = None
            warn(f"warning: no sign ranges or true classes: {err}")
        self.index = index
        self.annotated = records_by_path(index)
        self.sampled = records_by_path(as_sampled(spec, index) if index else None)
        self.encoder = None
        if source.kind == "video_head":
            self.encoder = rebuild_frame_encoder(spec, source.summary, index)
            produced = tuple(self.encoder.output.shape[1:])
            expected = tuple(source.model.input_shape[0][2:])
            if produced != expected:
                raise UserError(
                    f"{source.model_file}: the rebuilt frame encoder gives features {produced}, "
                    f"the head takes {expected}"
                )
        self.probe = attention_model(source.model)

    def explain(self, paths: list[str]) -> Iterator[Explained | Failed]:
        """One result per path, in order; an unreadable clip is a `Failed`, never an error."""
        for path in paths:
            clip = self.read(path)
            yield clip if isinstance(clip, Failed) else self._explain(path, clip)

    def read(self, path: str) -> Clip | Failed:
        """The clip as the model sees it, or why it cannot be read."""
        problem = unreadable(path, VIDEO_EXTENSIONS, "a video model")
        if problem:
            return Failed(path, problem)
        real = os.path.realpath(path)
        annotated = self.annotated.get(real)
        record = self.sampled.get(real) or ClipRecord(
            video_id=Path(path).stem,
            path=real,
            label=-1,
            split="",
            frame_start=0,
            frame_end=None,
            bbox=None,
            signer_id=None,
        )
        crop = self.spec.crop_bbox
        try:
            # The scan's verified count, as every training reader samples from it.
            record = dataclasses.replace(record, frame_count=check_clip(record, crop_bbox=crop))
            frames, mask, indices = read_clip_frames(
                record, self.num_frames, self.mode, self.size, crop_bbox=crop
            )
        except VideoDecodeError as err:
            return Failed(path, err.reason)
        sign, true_class = None, None
        if annotated is not None:
            true_class = self.index.class_names[annotated.label]
            try:
                sign = resolve_frame_range(annotated, record.frame_count)
            except VideoDecodeError:  # a range past the file: nothing to shade
                sign = None
        return Clip(frames, mask, indices, record.frame_count, sign, true_class)

    def _explain(self, path: str, clip: Clip) -> Explained:
        x = clip.frames.astype(np.float32)
        if self.encoder is not None:
            x = np.asarray(self.encoder.predict_on_batch(x), np.float32)
        # predict_on_batch runs the compiled graph, as the run's evaluation did: under mixed
        # precision an eager call rounds differently (by ~0.005 in probability, measured).
        outputs = self.probe.predict_on_batch([x[None], clip.mask[None]])
        probabilities = softmax(outputs["logits"])[0]
        weights = outputs.get("temporal_weights")
        weights = None if weights is None else np.asarray(weights, np.float32)[0]
        maps = outputs.get("frame_maps")
        maps = None if maps is None else np.asarray(maps, np.float32)[0, ..., 0]
        figure = self._figure(path, clip, probabilities, weights, maps)
        return Explained(path, probabilities, figure, clip.true_class)

    def _figure(self, path, clip: Clip, probabilities, weights, maps):
        """Top: the T sampled frames (with frame maps, if any); below: weights over frames."""
        t = len(clip.frames)
        # Long clips get smaller frames, not an ever wider figure.
        side = min(FRAME_INCHES, MAX_WIDTH_INCHES / t)
        figure = new_figure(max(6.0, side * t), side + 2.6)
        grid = figure.add_gridspec(2, t, height_ratios=[side, 2.0])
        for i in range(t):
            title = f"frame {int(clip.indices[i])}" + ("" if clip.mask[i] else "\n(padding)")
            overlay(figure.add_subplot(grid[0, i]), clip.frames[i], _map(maps, i), title)
        _weights_plot(figure.add_subplot(grid[1, :]), clip, weights)
        ranked = describe(top_k(probabilities, TITLE_CLASSES), self.class_names)
        truth = f"  (true: {clip.true_class})" if clip.true_class else ""
        figure.suptitle(f"{Path(path).name}: {ranked}{truth}", fontsize=9)
        return figure


def _map(maps: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if maps is None else maps[i]


def _weights_plot(ax, clip: Clip, weights: np.ndarray | None) -> None:
    """Frame weights against frame number in the file, the sign range shaded."""
    valid = clip.mask
    ax.set_xlim(-0.5, clip.frame_count - 0.5)
    if clip.sign is not None:
        start, end = clip.sign
        ax.axvspan(start - 0.5, end + 0.5, color="tab:green", alpha=0.15, label="annotated sign")
    if weights is None:
        ax.text(
            0.5,
            0.5,
            "this temporal module gives no frame weights",
            ha="center",
            transform=ax.transAxes,
        )
    else:
        # Padding repeats the last frame with weight 0: only the valid frames are plotted.
        ax.stem(clip.indices[valid], weights[valid], basefmt=" ", label="frame weight")
        ax.axhline(
            1.0 / max(int(valid.sum()), 1),
            color="grey",
            linestyle="--",
            linewidth=0.8,
            label="uniform",
        )
        ax.set_ylim(0.0, max(float(weights[valid].max()) * 1.15, 1e-6))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("frame number in the file")
    ax.set_ylabel("temporal weight")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
