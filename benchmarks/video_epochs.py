"""An N-epoch video run with the frozen-feature cache against the same run without it.

    python benchmarks/video_epochs.py [--epochs 20] [--clips-per-class 20] [--image-size 96]
        [--steps-per-execution 32]

On a small synthetic sign set (generated into a temporary folder), each run is timed from
`prepare_video_inputs` (clip scan, random MobileNetV2 encoder and its BatchNorm calibration,
and, with the cache, computing every clip's features into a FRESH cache folder) to the end of
`model.fit` over N epochs with validation after each. The head is `build_video_head`
(tcn, width 128, dropout 0.5: train_video.py's defaults) wrapped by `inputs.wrap_head`, with
the same seed, AdamW/cosine from `keras_attn.training.optim`, one-hot labels and
`steps_per_execution` (train_video.py's default, 32, cut to a divisor of the epoch) as
`keras_attn.training.run` does. Then one head is evaluated on the cached validation features
and, wrapped, on the validation frames: the logits must agree within 1e-5.

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
from keras_attn.experiments.video import prepare_video_inputs
from keras_attn.models.video import build_video_head
from keras_attn.training.config import TrainConfig
from keras_attn.training.optim import make_loss, make_optimizer
from keras_attn.training.run import execution_size

NUM_FRAMES, BATCH, SEED = 8, 4, 0


def make_head(inputs, num_classes):
    keras.utils.set_random_seed(SEED)
    return build_video_head(
        inputs.feature_shape,
        NUM_FRAMES,
        num_classes,
        temporal="tcn",
        width=128,
        dropout=0.5,
        seed=SEED,
        temporal_options=dict(filters=128, pool="attention"),
    )


def prepare(index, cached: bool, cache_dir: str, image_size: int):
    return prepare_video_inputs(
        index,
        NUM_FRAMES,
        "uniform",
        image_size,
        "mobilenet_v2",
        "none",
        feature_cache=cached,
        cache_dir=cache_dir,
        batch_size=BATCH,
        seed=SEED,
    )


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


def one_run(index, cached: bool, cache_dir: str, args) -> tuple[float, float, dict, str]:
    epochs = args.epochs
    start = time.perf_counter()
    inputs = prepare(index, cached, cache_dir, args.image_size)
    prepared = time.perf_counter() - start
    num_classes = len(index.class_names)
    model = inputs.wrap_head(make_head(inputs, num_classes))
    cfg = TrainConfig(
        epochs=epochs, batch_size=BATCH, lr=1e-3, weight_decay=1e-4, label_smoothing=0.0, seed=SEED
    )
    model.compile(
        optimizer=make_optimizer(cfg, inputs.steps_per_epoch, model),
        loss=make_loss(cfg),
        metrics=["accuracy"],
        steps_per_execution=execution_size(args.steps_per_execution, inputs.steps_per_epoch),
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
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--clips-per-class", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=96, help="96: synthetic; 224: WLASL")
    parser.add_argument("--steps-per-execution", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="video_epochs_") as tmp:
        t0 = time.perf_counter()
        data_dir = ensure_synthetic_videos(
            root=f"{tmp}/synthetic", clips_per_class=args.clips_per_class
        )
        index = load_wlasl(data_dir, "test", None, "frequency")
        print(f"{index.summary_line()}  (generated in {time.perf_counter() - t0:.1f} s)")
        print(
            f"{args.epochs} epochs, batch {BATCH}, {NUM_FRAMES} frames, {args.image_size}px, "
            "random mobilenet_v2 encoder (calibrated), tcn head, "
            f"steps_per_execution {args.steps_per_execution} (cut to a divisor of the epoch)"
        )

        t_cached, p_cached, last_c, parts_c = one_run(index, True, f"{tmp}/cache", args)
        print(f"cached:   {t_cached:7.1f} s  (of which prepare incl. features {p_cached:.1f} s)")
        print(f"          {parts_c}")
        print(f"          last epoch {last_c}")
        t_plain, p_plain, last_p, parts_p = one_run(index, False, f"{tmp}/unused", args)
        print(f"uncached: {t_plain:7.1f} s  (of which prepare {p_plain:.1f} s)")
        print(f"          {parts_p}")
        print(f"          last epoch {last_p}")
        print(f"speed-up uncached/cached: {t_plain / t_cached:.1f}x  (goal >= 10x)")

        # Same head weights, cached features vs frames through the frozen encoder.
        cached = prepare(index, True, f"{tmp}/cache", args.image_size)  # all hits now
        plain = prepare(index, False, f"{tmp}/unused", args.image_size)
        head = make_head(cached, len(index.class_names))
        logits_c = head.predict(cached.val, verbose=0)
        logits_p = plain.wrap_head(head).predict(plain.val, verbose=0)
        diff = float(np.abs(logits_c - logits_p).max())
        print(
            f"validation logits ({len(logits_c)} clips): max |cached - uncached| = {diff:.2e}  "
            f"(goal <= 1e-5: {'met' if diff <= 1e-5 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
