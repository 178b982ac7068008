"""Training images/s of each image attention type on each backbone, and its overhead over none.

    python benchmarks/image_step.py [--steps 20] [--repeats 3] [--batch 64]
        [--backbones small_cnn,mobilenet_v2] [--attention none,channel,spatial,cbam,linear]
        [--jit-compile auto|on|off] [--mixed-precision auto|on|bf16|off] [--legacy-cbam]

Each model is `build_image_model(6, size, backbone, attention)` with the settings of an
`ImageExperiment()` (6 synthetic classes, dropout 0.2, reduction 8, kernel 7, seed 0; random
weights), at the size its backbone is run at: small_cnn 64 px (the default for synthetic
data), mobilenet_v2 96 px, densenet 32 px (optional). It is compiled by the trainer itself,
`keras_attn.training.run.compile_for_training` (with_stability_metrics, float32 logits,
optimizer and loss of the spec: AdamW 2e-3, weight decay 5e-4, cosine, label smoothing 0.1;
metrics=["accuracy"]; strategy, steps per execution, and jit_compile / mixed precision
resolved by `acceleration`, "auto": off without a GPU), so it trains as a run does.
After warm-up (a `fit` of a few steps when built, so tracing is excluded, and another once
all are built, in the timed order), each measurement times the steps of
`model.fit(ds, epochs=1, steps_per_epoch=steps)` (first step's start to last step's end:
`StepClock`) on ONE in-memory batch repeated
(`Dataset.from_tensors((x, y_onehot)).repeat()`), so the model step alone is timed:
images/s = steps * batch / seconds. Each repeat measures every variant once, in turn, and
the table gives the median over repeats.

overhead = none_img_per_s / variant_img_per_s - 1 (medians, same backbone). Goals (issue 6):
CBAM <= 10% on MobileNetV2; channel and spatial <= 10% on the small CNN; (issue 16) CBAM
<= 10% on small_cnn and resnet_small, float32 and bf16.

`--legacy-cbam` adds a `cbam_old` variant: the same model with the gate layers as they were
before issue 16 part 3 (`legacy_gates.py`, swapped into the registry while it is built),
so old and new are timed side by side in one run. Each repeat also gives the per-repeat
ratio variant / none (the spread of the overhead), printed as min..max.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_attn.layers as attention_layers  # noqa: E402
from keras_attn.data.images import SYNTHETIC_PER_CLASS  # noqa: E402
from keras_attn.experiments import image as image_experiment  # noqa: E402
from keras_attn.experiments.image import ImageExperiment  # noqa: E402
from keras_attn.layers import attention_names  # noqa: E402
from keras_attn.training import acceleration  # noqa: E402
from keras_attn.training.run import compile_for_training  # noqa: E402

SIZES = {"small_cnn": 64, "resnet_small": 64, "mobilenet_v2": 96, "densenet": 32}
LEGACY = "cbam_old"  # --legacy-cbam: cbam built with benchmarks/legacy_gates.py
NUM_CLASSES = 6  # the synthetic set's
GOALS = [
    ("mobilenet_v2", "cbam"),
    ("small_cnn", "channel"),
    ("small_cnn", "spatial"),
    ("small_cnn", "cbam"),
    ("resnet_small", "cbam"),
]
GOAL_MAX = 0.10


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"machine: os.cpu_count()={os.cpu_count()}, {platform.machine()}, Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"load average {load}; {date}"
    )


def image_model(spec: ImageExperiment, num_classes: int, size: int):
    """`() -> model`: the image experiment's own classifier for `spec`, without data."""
    return functools.partial(image_experiment.classifier, spec, num_classes, size)


def compiled_image_model(
    spec: ImageExperiment, steps_per_epoch: int, legacy: bool = False
) -> keras.Model:
    """The classifier of `spec` at `SIZES[spec.backbone]`, compiled by the run's trainer;
    `legacy`: with the gate layers of before issue 16 part 3 (`legacy_gates.py`)."""
    build = image_model(spec, NUM_CLASSES, SIZES[spec.backbone])
    if not legacy:
        return compile_for_training(build, spec, steps_per_epoch)
    import legacy_gates

    saved = dict(attention_layers.ATTENTION)
    attention_layers.ATTENTION.update(
        channel=legacy_gates.LegacyChannelAttention,
        spatial=legacy_gates.LegacySpatialAttention,
        cbam=legacy_gates.LegacyCBAM,
    )
    try:
        return compile_for_training(build, spec, steps_per_epoch)
    finally:
        attention_layers.ATTENTION.update(saved)


def repeated_batch(batch: int, size: int, num_classes: int, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, batch)]
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def whole_executions(model: keras.Model, steps: int) -> int:
    """`steps` rounded up to whole calls of the model's `steps_per_execution` (at least one)."""
    per_call = int(model.steps_per_execution or 1)
    return per_call * max(1, math.ceil(steps / per_call))


def warm_up(model: keras.Model, ds: tf.data.Dataset, steps: int) -> None:
    """Traces the training step and runs it a few times (not timed)."""
    model.fit(
        ds, epochs=1, steps_per_epoch=whole_executions(model, steps), verbose=0, shuffle=False
    )


class StepClock(keras.callbacks.Callback):
    """Wall time from the first training step's start to the last one's end.

    Not the whole `fit` call: when `fit` returns, TensorFlow tears down the iterator of the
    repeated dataset, and with tf.data autotuning on that waited up to about 1 s here (fits
    of 20 steps took exactly 10.24 or 20.48 s: the figures came out as 62.5 or 125 img/s).
    """

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds = time.perf_counter() - self.start


def fit_rate(model: keras.Model, ds: tf.data.Dataset, steps: int, batch: int) -> float:
    """Images (or clips) per second of `steps` training steps in one `fit` (rounded up to
    whole calls when the model runs several steps per call)."""
    steps = whole_executions(model, steps)
    clock = StepClock()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[clock])
    return steps * batch / clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=ImageExperiment().batch_size)
    parser.add_argument(
        "--backbones", default="small_cnn,mobilenet_v2", help=f"of {','.join(SIZES)}"
    )
    parser.add_argument("--attention", default=",".join(attention_names()))
    parser.add_argument(
        "--jit-compile", default="auto", choices=("auto", "on", "off"), help="XLA, as in a run"
    )
    parser.add_argument(
        "--mixed-precision",
        default=ImageExperiment().mixed_precision,
        choices=acceleration.PRECISIONS,
        help="as a run's --mixed-precision (default: the experiment's)",
    )
    parser.add_argument(
        "--legacy-cbam",
        action="store_true",
        help=f"also time {LEGACY}: cbam with the gate layers before issue 16 part 3",
    )
    args = parser.parse_args()

    for name in ("steps", "repeats", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    backbones = [b for b in args.backbones.split(",") if b]
    attentions = [a for a in args.attention.split(",") if a]
    for b in backbones:
        if b not in SIZES:
            parser.error(f"unknown backbone {b!r}; choose from {', '.join(SIZES)}")
    for a in attentions:
        if a not in attention_names():
            parser.error(f"unknown attention {a!r}; choose from {', '.join(attention_names())}")
    if "none" not in attentions:
        attentions.insert(0, "none")  # the overhead's reference

    if args.legacy_cbam:
        attentions.append(LEGACY)
    spec = ImageExperiment().replace(
        batch_size=args.batch, jit_compile=args.jit_compile, mixed_precision=args.mixed_precision
    )
    # The default synthetic run's steps per epoch (only the schedule depends on it).
    steps_per_epoch = math.ceil(
        NUM_CLASSES * (spec.train_per_class or SYNTHETIC_PER_CLASS) / spec.batch_size
    )
    print(machine_line())
    print(
        f"batch {args.batch}, {args.steps} timed steps x {args.repeats} repeats (median), "
        f"{args.warmup} warm-up steps; AdamW lr {spec.lr} wd {spec.weight_decay}, label "
        f"smoothing {spec.label_smoothing}, XLA {acceleration.resolve(spec.jit_compile)}, mixed "
        f"precision {spec.mixed_precision} "  # the spec resolved auto
        f"(--mixed-precision {args.mixed_precision}); random weights, "
        f"{NUM_CLASSES} classes"
    )

    variants, datasets = [], {}
    t0 = time.perf_counter()
    for backbone in backbones:
        size = SIZES[backbone]
        datasets[backbone] = repeated_batch(args.batch, size, NUM_CLASSES)
        for attention in attentions:
            legacy = attention == LEGACY
            variant = spec.replace(backbone=backbone, attention="cbam" if legacy else attention)
            model = compiled_image_model(variant, steps_per_epoch, legacy=legacy)
            warm_up(model, datasets[backbone], args.warmup)
            variants.append((backbone, attention, model))
    for backbone, _, model in variants:  # a second untimed call each, in the timed order
        warm_up(model, datasets[backbone], args.warmup)
    built = time.perf_counter() - t0
    print(f"built, compiled and warmed up {len(variants)} models in {built:.0f} s")

    rates: dict[tuple[str, str], list[float]] = {(b, a): [] for b, a, _ in variants}
    for _ in range(args.repeats):
        for backbone, attention, model in variants:  # interleaved: A B C, A B C, ...
            rates[backbone, attention].append(
                fit_rate(model, datasets[backbone], args.steps, args.batch)
            )

    median = {key: statistics.median(values) for key, values in rates.items()}
    overhead = {(b, a): median[b, "none"] / median[b, a] - 1 for b, a in median}
    print()
    print(
        f"{'backbone':<13}{'px':>4}  {'attention':<9}{'img/s':>9}  {'overhead':>9}  "
        f"{'per-repeat':>15}  runs (img/s)"
    )
    for backbone, attention, _ in variants:
        key = (backbone, attention)
        runs = ", ".join(f"{r:.1f}" for r in rates[key])
        over = "-" if attention == "none" else f"{100 * overhead[key]:+.1f}%"
        paired = [n / r - 1 for n, r in zip(rates[backbone, "none"], rates[key], strict=True)]
        spread = (
            "" if attention == "none" else (f"{100 * min(paired):+.0f}..{100 * max(paired):+.0f}%")
        )
        print(
            f"{backbone:<13}{SIZES[backbone]:>4}  {attention:<9}{median[key]:9.1f}  {over:>9}  "
            f"{spread:>15}  {runs}"
        )
    print()

    failed = measured = 0
    for backbone, attention in GOALS:
        label = f"{attention} on {backbone}: overhead"
        if (backbone, attention) not in overhead:
            print(f"{label} not measured (goal <= {GOAL_MAX:.0%})")
            continue
        measured += 1
        ok = overhead[backbone, attention] <= GOAL_MAX
        failed += not ok
        print(
            f"{label} {100 * overhead[backbone, attention]:+.1f}% "
            f"(goal <= {GOAL_MAX:.0%}): {'met' if ok else 'NOT met'}"
        )
    if measured == 0:
        print("goal not measured (none of the goal variants ran)")
    else:
        partial = "" if measured == len(GOALS) else f" (only {measured} of {len(GOALS)} measured)"
        print(f"{'goal NOT met' if failed else 'goal met'}{partial}")


if __name__ == "__main__":
    main()
