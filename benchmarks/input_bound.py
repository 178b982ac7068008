"""Is training input-bound? What each input pipeline delivers alone against its model's step.

    python benchmarks/input_bound.py [--per-class 400] [--steps 20] [--head-steps 200]
        [--clips 400] [--clips-per-class 10] [--repeats 3] [--parts image,features,clips]

Three pairs, each measured alone (nothing else running in the process) and interleaved
within each repeat (pipeline, model, next pipeline, ...); the table gives medians:

- image: images/s of `train_dataset(data, 64, seed, 0, epochs)` (with the real crop-pad + flip
  augmentation and the one-hot map `run_training` adds) on the default synthetic set
  (`load_image_data("synthetic", ..., train_per_class=--per-class)`, 6 classes, 64 px;
  generated into data/synthetic on first use), against images/s of the default model's
  training step (`keras_attn.experiments.image.build_model` of an `ImageExperiment()`:
  small_cnn + cbam, batch 64) on one in-memory batch repeated.
- features: clips/s of the cached-feature dataset (`feature_dataset` on random arrays of
  the real shapes: (N, 8, 1280) float32 features, (N, 8) masks, labels; batch 4, training
  order) against clips/s of the video head's training step (`build_video_head((1280,), 8,
  10, temporal="tcn", width=128)` with the other settings of a `VideoExperiment()`).
- clips: clips/s of the uncached clip pipeline (`clip_dataset`, 8 uniform frames at 96 px,
  batch 4, training order) on a few generated synthetic MP4s (`ensure_synthetic_videos` in a
  temporary folder: 2 classes x --clips-per-class 10, the train and test splits: 16
  clips, ~15 after the generator's missing files) against clips/s of the end-to-end
  model's training step (`build_video_model` = random frozen MobileNetV2 encoder at 96 px +
  the same head).
  The encoder's BatchNorm is not calibrated: that changes its values, not its cost.

Each pipeline measurement makes a fresh iterator, pulls `--skip` batches untimed (start-up),
then times the next `--batches` batches (default: one epoch for image and features, 20 for
clips), and releases the iterator (no prefetching in the background while a model is
timed). Models are compiled by the run's trainer, `compile_for_training`, with their spec's
settings (so the video models run the spec's 32 steps per execution, cut to a divisor of
the epoch, as a video run does) and warmed up (tracing excluded); each model measurement
times the steps of `model.fit(..., steps_per_epoch=steps)` (`image_step.StepClock`; steps
rounded up to whole executions).
Ratio = pipeline rate / model rate; goal >= 2x for each pair measured.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from image_step import fit_rate, machine_line, warm_up, whole_executions

from keras_attn.data.features import feature_dataset
from keras_attn.data.images import (
    SYNTHETIC_PER_CLASS,
    load_image_data,
    steps_per_epoch,
    train_dataset,
)
from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.video import clip_dataset, scan_clips
from keras_attn.data.wlasl import load_wlasl
from keras_attn.experiments import image
from keras_attn.experiments import video as video_experiment
from keras_attn.experiments.image import ImageExperiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.models.video import build_frame_encoder, build_video_model
from keras_attn.training.run import compile_for_training

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("image", "features", "clips")
GOAL = 2.0
# The video experiment's frames per clip and synthetic frame size; MobileNetV2's feature width.
FRAMES, VIDEO_SIZE = VideoExperiment().num_frames, VideoExperiment().resolved_image_size()
FEATURE_DIM, VIDEO_CLASSES = 1280, 10


def one_hot(num_classes: int):
    return lambda x, y: (x, tf.one_hot(y, num_classes))


def pipeline_rate(ds: tf.data.Dataset, skip: int, batches: int) -> float:
    """Examples/s of `batches` batches from a fresh iterator over `ds`, after `skip` untimed.

    A fresh iterator per measurement starts with empty buffers (nothing prefetched while a
    model was being timed) and is released at the end, so no background thread of it competes
    with the next model measurement.
    """
    iterator = iter(ds)
    for _ in range(skip):
        next(iterator)
    count = 0
    start = time.perf_counter()
    for _ in range(batches):
        _, y = next(iterator)
        count += int(y.shape[0])
    return count / (time.perf_counter() - start)


def video_head(spec: VideoExperiment):
    """The video experiment's own head for `spec` on pooled (FRAMES, FEATURE_DIM) features."""
    return video_experiment.head(spec, (FEATURE_DIM,), VIDEO_CLASSES)


def repeated_clips(batch: int, frame_shape: tuple[int, ...]) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    scale = 255.0 if len(frame_shape) == 3 else 1.0  # pixels or features
    x = (scale * rng.random((batch, FRAMES, *frame_shape))).astype(np.float32)
    mask = np.ones((batch, FRAMES), bool)
    y = np.eye(VIDEO_CLASSES, dtype=np.float32)[rng.integers(0, VIDEO_CLASSES, batch)]
    return tf.data.Dataset.from_tensors(((x, mask), y)).repeat()


def setup_image(args, spec: ImageExperiment, work: list) -> str:
    data = load_image_data(
        spec.data,
        str(ROOT / "data" / "synthetic"),
        spec.image_size,
        seed=spec.seed,
        train_per_class=spec.train_per_class,
    )
    per_epoch = steps_per_epoch(data, spec.batch_size)
    batches = args.batches or per_epoch
    epochs = math.ceil((args.skip + batches) / per_epoch) + 1
    ds = train_dataset(data, spec.batch_size, spec.seed, 0, epochs).map(one_hot(data.num_classes))
    pipeline_rate(ds, 1, 1)  # a first pass through the pipeline, not timed

    spec = image.resolved(spec, data)
    model = compile_for_training(lambda: image.build_model(spec, data), spec, per_epoch)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (spec.batch_size, data.image_size, data.image_size, 3))
    y = np.eye(data.num_classes)[rng.integers(0, data.num_classes, spec.batch_size)]
    batch_ds = tf.data.Dataset.from_tensors((x.astype("float32"), y.astype("float32"))).repeat()
    warm_up(model, batch_ds, args.warmup)
    work.append(
        (
            "image",
            "img/s",
            lambda: pipeline_rate(ds, args.skip, batches),
            lambda: fit_rate(model, batch_ds, args.steps, spec.batch_size),
            lambda: (pipeline_rate(ds, 1, 1), warm_up(model, batch_ds, args.warmup)),
        )
    )
    return (
        f"image: {data.summary_line()}; augment {data.augment}, batch {spec.batch_size}, "
        f"{batches} batches timed; model {spec.backbone} + {spec.attention}"
    )


def setup_features(args, spec: VideoExperiment, work: list) -> str:
    rng = np.random.default_rng(0)
    n = args.clips
    features = rng.standard_normal((n, FRAMES, FEATURE_DIM), dtype=np.float32)
    masks = np.ones((n, FRAMES), bool)
    labels = rng.integers(0, VIDEO_CLASSES, n).astype(np.int32)
    per_epoch = math.ceil(n / spec.batch_size)
    batches = args.batches or per_epoch
    epochs = math.ceil((args.skip + batches) / per_epoch) + 1
    ds = feature_dataset(features, masks, labels, spec.batch_size, spec.seed, True, 0, epochs)
    ds = ds.map(one_hot(VIDEO_CLASSES))
    pipeline_rate(ds, 1, 1)

    model = compile_for_training(lambda: video_head(spec), spec, per_epoch)
    steps = whole_executions(model, args.head_steps)
    batch_ds = repeated_clips(spec.batch_size, (FEATURE_DIM,))
    warm_up(model, batch_ds, args.warmup)
    work.append(
        (
            "features",
            "clips/s",
            lambda: pipeline_rate(ds, args.skip, batches),
            lambda: fit_rate(model, batch_ds, steps, spec.batch_size),
            lambda: (pipeline_rate(ds, 1, 1), warm_up(model, batch_ds, args.warmup)),
        )
    )
    return (
        f"features: {n} clips of ({FRAMES}, {FEATURE_DIM}) float32, batch {spec.batch_size}, "
        f"{batches} batches timed; model video head ({spec.temporal}, width {spec.width}), "
        f"{steps} steps timed ({model.steps_per_execution} per execution)"
    )


def setup_clips(args, spec: VideoExperiment, work: list, tmp: str) -> str:
    t0 = time.perf_counter()
    data_dir = ensure_synthetic_videos(
        root=f"{tmp}/synthetic",
        num_classes=2,
        clips_per_class=args.clips_per_class,
        image_size=VIDEO_SIZE,
    )
    index = load_wlasl(data_dir, "test", None, "frequency")
    records, _ = scan_clips(index.train + index.val)
    made = time.perf_counter() - t0
    per_epoch = math.ceil(len(records) / spec.batch_size)
    batches = args.batches or 20
    epochs = math.ceil((args.skip + batches) / per_epoch) + 1
    ds = clip_dataset(
        records,
        spec.num_frames,
        spec.sampling,
        VIDEO_SIZE,
        spec.seed,
        True,
        spec.batch_size,
        spec.crop_bbox,
        0,
        epochs,
    )
    ds = ds.map(one_hot(VIDEO_CLASSES))
    pipeline_rate(ds, 1, 1)

    encoder, _ = build_frame_encoder(spec.backbone, VIDEO_SIZE, "none")

    def build():
        return build_video_model(encoder, video_head(spec), spec.num_frames)

    model = compile_for_training(build, spec, per_epoch)
    steps = whole_executions(model, args.steps)
    batch_ds = repeated_clips(spec.batch_size, (VIDEO_SIZE, VIDEO_SIZE, 3))
    warm_up(model, batch_ds, args.warmup)
    work.append(
        (
            "clips",
            "clips/s",
            lambda: pipeline_rate(ds, args.skip, batches),
            lambda: fit_rate(model, batch_ds, steps, spec.batch_size),
            lambda: (pipeline_rate(ds, 1, 1), warm_up(model, batch_ds, args.warmup)),
        )
    )
    return (
        f"clips: {len(records)} synthetic MP4s (generated in {made:.1f} s), {spec.num_frames} "
        f"frames at {VIDEO_SIZE} px, batch {spec.batch_size}, {batches} batches timed; model "
        f"random frozen {spec.backbone} encoder + the video head, {steps} steps timed "
        f"({model.steps_per_execution} per execution)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=SYNTHETIC_PER_CLASS)
    parser.add_argument("--clips", type=int, default=400, help="cached-feature clips (random)")
    parser.add_argument(
        "--clips-per-class", type=int, default=10, help="synthetic MP4s, 2 classes (>= 10)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed image/end-to-end steps")
    parser.add_argument("--head-steps", type=int, default=200, help="timed video head steps")
    parser.add_argument("--batches", type=int, help="timed pipeline batches (default: see doc)")
    parser.add_argument("--skip", type=int, default=10, help="untimed batches before each")
    parser.add_argument("--warmup", type=int, default=3, help="untimed model steps first")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"of {','.join(PARTS)}")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    for part in parts:
        if part not in PARTS:
            parser.error(f"unknown part {part!r}; choose from {', '.join(PARTS)}")

    print(machine_line())
    image_spec = ImageExperiment().replace(train_per_class=args.per_class)
    video_spec = VideoExperiment()
    work: list = []
    with tempfile.TemporaryDirectory(prefix="input_bound_") as tmp:
        t0 = time.perf_counter()
        if "image" in parts:
            print(setup_image(args, image_spec, work))
        if "features" in parts:
            print(setup_features(args, video_spec, work))
        if "clips" in parts:
            print(setup_clips(args, video_spec, work, tmp))
        for _, _, _, _, warm in work:  # one untimed round, in the timed order
            warm()
        print(f"set up and warmed up in {time.perf_counter() - t0:.0f} s")

        rates = {name: ([], []) for name, *_ in work}
        for _ in range(args.repeats):
            for name, _, pipeline, model, _ in work:  # interleaved
                rates[name][0].append(pipeline())
                rates[name][1].append(model())

    print()
    print(f"{'part':<10}{'unit':<9}{'pipeline':>10}{'model':>10}{'ratio':>10}  goal >= {GOAL:g}x")
    failed = 0
    for name, unit, *_ in work:
        pipe, model = (statistics.median(r) for r in rates[name])
        ratio = pipe / model
        failed += ratio < GOAL
        runs = "; ".join(
            f"{p:.1f}/{m:.1f}" for p, m in zip(rates[name][0], rates[name][1], strict=True)
        )
        print(
            f"{name:<10}{unit:<9}{pipe:10.1f}{model:10.1f}{ratio:9.2f}x  "
            f"{'met' if ratio >= GOAL else 'NOT met'}  (runs pipeline/model: {runs})"
        )
    print()
    print("goal NOT met" if failed else "goal met")


if __name__ == "__main__":
    main()
