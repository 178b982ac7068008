"""An N-epoch video run with the frozen-feature cache against the same run without it.

    python benchmarks/video_epochs.py [--epochs 20] [--clips-per-class 20] [--image-size 96]
        [--steps-per-execution 32]

On a small synthetic sign set (generated into a temporary folder), each run is timed from
`prepare_video_inputs` (clip scan, random MobileNetV2 encoder and its BatchNorm calibration,
and, with the cache, computing every clip's features into a FRESH cache folder) to the end of
`model.fit` over N epochs with validation after each. Both runs have the settings of a
`VideoExperiment()` (tcn head, width 128, dropout 0.5, batch 4, 8 frames, AdamW 1e-3,
cosine, seed 0) with random encoder weights and the flags' epochs, frame size and
`steps_per_execution` (32, cut to a divisor of the epoch); the model is
`keras_attn.experiments.video.build_model` (the head, wrapped by `inputs.wrap_head`),
compiled by the run's trainer, `compile_for_training`, and fed one-hot labels, as a video
run is. Then one head is evaluated on the cached validation features and, wrapped, on the
validation frames: the logits must agree within 1e-5.

The profile of each run: `FitParts` splits `fit` into the first training call (which traces
the step function), the later calls, and the validation passes.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.wlasl import load_wlasl
from keras_attn.experiments import video
from keras_attn.experiments.video import VideoData, VideoExperiment, prepare_video_inputs
from keras_attn.training.run import compile_for_training


def prepare(spec: VideoExperiment, index, data_dir: str, cached: bool, cache_dir: str):
    """`spec`'s VideoData for `index` (what `load_video_data` prepares), cached or not."""
    inputs = prepare_video_inputs(
        index,
        spec.num_frames,
        spec.sampling,
        spec.resolved_image_size(),
        spec.backbone,
        spec.backbone_weights,
        feature_maps=spec.frame_attention != "none",
        crop_bbox=spec.crop_bbox,
        feature_cache=cached,
        cache_dir=cache_dir,
        batch_size=spec.batch_size,
        seed=spec.seed,
    )
    return VideoData(index, inputs, data_dir, spec.resolved_image_size())


class FitParts(keras.callbacks.Callback):
    """Where `fit`'s time goes: training calls (the first one traces the step), validation."""

    def __init__(self):
        super().__init__()
        self.first_call = self.later_calls = self.validation = 0.0
        self.calls = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        seconds = time.perf_counter() - self._start
        if self.calls == 0:
            self.first_call = seconds
        else:
            self.later_calls += seconds
        self.calls += 1

    def on_test_begin(self, logs=None):
        self._val_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validation += time.perf_counter() - self._val_start

    def line(self, fit_seconds: float) -> str:
        rest = fit_seconds - self.first_call - self.later_calls - self.validation
        return (
            f"fit {fit_seconds:.1f} s: first training call (traces the step) "
            f"{self.first_call:.1f} s, {self.calls - 1} more calls {self.later_calls:.1f} s, "
            f"validation {self.validation:.1f} s, the rest {rest:.1f} s"
        )


def one_run(
    spec: VideoExperiment, index, data_dir: str, cached: bool, cache_dir: str
) -> tuple[float, float, dict, str]:
    epochs = spec.epochs
    start = time.perf_counter()
    data = prepare(spec, index, data_dir, cached, cache_dir)
    inputs = data.inputs
    prepared = time.perf_counter() - start
    num_classes = len(index.class_names)
    model = compile_for_training(
        lambda: video.build_model(spec, data), spec, inputs.steps_per_epoch
    )

    def one_hot(x, y):
        return x, tf.one_hot(y, num_classes)

    parts = FitParts()
    fit_start = time.perf_counter()
    history = model.fit(
        inputs.train(0, epochs).map(one_hot),
        epochs=epochs,
        steps_per_epoch=inputs.steps_per_epoch,
        validation_data=inputs.val.map(one_hot),
        verbose=0,
        shuffle=False,  # the dataset fixes the order per seed and epoch, as in a run
        callbacks=[parts],
    )
    end = time.perf_counter()
    last = {k: v[-1] for k, v in history.history.items()}
    return end - start, prepared, last, parts.line(end - fit_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = VideoExperiment()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--clips-per-class", type=int, default=20)
    parser.add_argument(
        "--image-size",
        type=int,
        default=defaults.resolved_image_size(),
        help="96: synthetic; 224: WLASL",
    )
    parser.add_argument("--steps-per-execution", type=int, default=defaults.steps_per_execution)
    args = parser.parse_args()
    spec = defaults.replace(
        epochs=args.epochs,
        image_size=args.image_size,
        steps_per_execution=args.steps_per_execution,
        synthetic_clips_per_class=args.clips_per_class,
        backbone_weights="none",
    )

    with tempfile.TemporaryDirectory(prefix="video_epochs_") as tmp:
        t0 = time.perf_counter()
        data_dir = ensure_synthetic_videos(
            root=f"{tmp}/synthetic", clips_per_class=spec.synthetic_clips_per_class
        )
        index = load_wlasl(data_dir, spec.val_split, spec.limit_classes or None, spec.class_order)
        print(f"{index.summary_line()}  (generated in {time.perf_counter() - t0:.1f} s)")
        print(
            f"{spec.epochs} epochs, batch {spec.batch_size}, {spec.num_frames} frames, "
            f"{spec.resolved_image_size()}px, random {spec.backbone} encoder (calibrated), "
            f"{spec.temporal} head, steps_per_execution {spec.steps_per_execution} (cut to a "
            "divisor of the epoch)"
        )

        t_cached, p_cached, last_c, parts_c = one_run(spec, index, data_dir, True, f"{tmp}/cache")
        print(f"cached:   {t_cached:7.1f} s  (of which prepare incl. features {p_cached:.1f} s)")
        print(f"          {parts_c}")
        print(f"          last epoch {last_c}")
        t_plain, p_plain, last_p, parts_p = one_run(spec, index, data_dir, False, f"{tmp}/unused")
        print(f"uncached: {t_plain:7.1f} s  (of which prepare {p_plain:.1f} s)")
        print(f"          {parts_p}")
        print(f"          last epoch {last_p}")
        print(f"speed-up uncached/cached: {t_plain / t_cached:.1f}x  (goal >= 10x)")

        # Same head weights, cached features vs frames through the frozen encoder.
        cached = prepare(spec, index, data_dir, True, f"{tmp}/cache")  # all hits now
        plain = prepare(spec, index, data_dir, False, f"{tmp}/unused")
        keras.utils.set_random_seed(spec.seed)
        head = video.build_model(spec, cached)  # the head: cached inputs wrap nothing
        logits_c = head.predict(cached.inputs.val, verbose=0)
        logits_p = plain.inputs.wrap_head(head).predict(plain.inputs.val, verbose=0)
        diff = float(np.abs(logits_c - logits_p).max())
        print(
            f"validation logits ({len(logits_c)} clips): max |cached - uncached| = {diff:.2e}  "
            f"(goal <= 1e-5: {'met' if diff <= 1e-5 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
