"""Where the CPU's time goes: each default model's FLOPs, its achieved GFLOP/s, and how far
that is from what this host's matrix units reach, in float32 and bfloat16.

    python benchmarks/cpu_roofline.py [--models image,resnet_small,seed,video_head,frames]
        [--precisions off,bf16] [--steps 10] [--repeats 3] [--profile-steps 5] [--top 8]

Peaks: `tf.matmul` of two 2048 x 2048 matrices and `tf.nn.conv2d` of a 64x32x32x64 batch
with a 3x3x64x64 kernel, each in a `tf.function`, warmed up, timed over enough calls to
take about a second; FLOPs 2*n^3 and 2*N*H*W*Cin*Cout*9.

Models (random weights; the sizes a default run uses):
- image: `python train_image.py`'s model, small_cnn + cbam, 64 px, 6 classes, batch 64;
- resnet_small: the same with `--backbone resnet_small`;
- seed: `--preset seed`'s DenseNet + linear-attention head, 32 px, 100 classes, batch 128;
- video_head: `python train_video.py`'s TCN head on cached EfficientNet-Lite0 features,
  8 frames x 1280, 10 classes, batch 4;
- frames: EfficientNet-Lite0 encoding frames for the feature cache (inference), 224 px
  (WLASL's frame side), batch 32.

FLOPs per example are counted from the model, not estimated: the training step (forward,
loss, gradients; the optimizer's update is not counted) is traced into a graph at the
benchmark's batch size and TensorFlow's registered per-op FLOP statistics are summed over
the ops the gradients depend on (`ops.get_stats_for_node_def(..., "flops")`, what
`tf.profiler`'s float_operation counts); "matrix" is the share in Conv2D, its two
backprops, depthwise convolutions and (batch) matmuls, the ops the matrix units run. The
rate is measured as a run trains: compiled by `compile_for_training`, images/s over
`--steps` steps of `fit` on one repeated in-memory batch (`image_step.fit_rate`); encoding
frames/s over calls of the encoder in a `tf.function`. Repeats are interleaved (every model
and precision once, then again), median of `--repeats`. achieved GFLOP/s = FLOPs per
example x examples/s; its fraction of each peak in the same precision.

Then, per precision, the model that reaches the smallest fraction of the conv peak is profiled
(`profile_step.profile_fit`: `--profile-steps` steps under TensorFlow's profiler) and its op
types are listed by time, with each op type's FLOPs, so the ops that take time without
doing matrix work are named.
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from image_step import NUM_CLASSES, fit_rate, machine_line, repeated_batch, warm_up
from profile_step import profile_fit
from tensorflow.python.framework import ops as tf_ops

from keras_attn.data.images import SYNTHETIC_PER_CLASS
from keras_attn.experiments import image as image_experiment
from keras_attn.experiments import video as video_experiment
from keras_attn.experiments.image import ImageExperiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.models.video import build_frame_encoder
from keras_attn.training import acceleration
from keras_attn.training.run import compile_for_training

MATRIX_OPS = {
    "Conv2D",
    "Conv2DBackpropInput",
    "Conv2DBackpropFilter",
    "DepthwiseConv2dNative",
    "DepthwiseConv2dNativeBackpropInput",
    "DepthwiseConv2dNativeBackpropFilter",
    "MatMul",
    "BatchMatMul",
    "BatchMatMulV2",
    "BatchMatMulV3",
}
MODELS = ("image", "resnet_small", "seed", "video_head", "frames")
DTYPES = {"off": tf.float32, "bf16": tf.bfloat16}
FRAME_SIZE, FRAME_BATCH = 224, 32
FEATURES = 1280  # EfficientNet-Lite0's pooled feature width
VIDEO_CLASSES = 10


def base_type(op_type: str) -> str:
    """The graph op a grappler / oneDNN rewrite runs as: `_FusedConv2D` -> `Conv2D`."""
    for prefix in ("_MklNative", "_MklFused", "_Mkl", "_Fused"):
        if op_type.startswith(prefix):
            return op_type[len(prefix) :]
    return op_type


def timed_calls(fn, *args, seconds: float = 1.0) -> float:
    """Seconds per call of `fn(*args)`, over enough calls to take about `seconds`."""
    fn(*args).numpy()  # trace and warm up
    start = time.perf_counter()
    fn(*args).numpy()
    calls = max(3, math.ceil(seconds / (time.perf_counter() - start)))
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
    out.numpy()
    return (time.perf_counter() - start) / calls


def peaks(precision: str) -> dict[str, float]:
    """GFLOP/s of a 2048^2 matmul and of a 64x32x32x64, 3x3 convolution."""
    dtype, rng = DTYPES[precision], tf.random.Generator.from_seed(0)
    n = 2048
    a, b = (tf.cast(rng.normal((n, n)), dtype) for _ in range(2))
    matmul = timed_calls(tf.function(tf.matmul), a, b)
    x = tf.cast(rng.normal((64, 32, 32, 64)), dtype)
    w = tf.cast(rng.normal((3, 3, 64, 64)), dtype)
    conv = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
    conv_seconds = timed_calls(conv, x, w)
    return {
        "matmul": 2 * n**3 / matmul / 1e9,
        "conv": 2 * 64 * 32 * 32 * 64 * 64 * 9 / conv_seconds / 1e9,
    }


def graph_flops(fn, *specs) -> dict[str, float]:
    """FLOPs of each op type in the graph of `fn` traced at `specs`, counting only the ops
    its outputs depend on (as TensorFlow prunes the graph before running it: a gradient
    function also builds, say, the first convolution's unused input gradient)."""
    graph = tf.function(fn).get_concrete_function(*specs).graph
    needed, stack = set(), [t.op for t in graph.outputs]
    while stack:
        op = stack.pop()
        if op not in needed:
            needed.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    flops: collections.Counter = collections.Counter()
    for op in needed:
        try:
            stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
        except ValueError:  # shapes the statistic needs are not static
            continue
        if stats.value:
            flops[op.type] += stats.value
    return dict(flops)


def train_step_flops(model: keras.Model, x_specs, y_spec) -> dict[str, float]:
    """FLOPs per op type of one training step of `model` (forward, loss, gradients)."""

    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, logits))
        return tape.gradient(loss, model.trainable_variables)

    return graph_flops(step, x_specs, y_spec)


class Trained:
    """A training step of one of the project's models: built as its run builds it."""

    def __init__(self, name: str, spec, build, inputs, num_classes: int, steps_per_epoch: int):
        self.name, self.batch, self.unit = name, spec.batch_size, "img"
        self.model = compile_for_training(build, spec, steps_per_epoch)
        rng = np.random.default_rng(0)
        y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, self.batch)]
        self.ds = tf.data.Dataset.from_tensors((inputs, y)).repeat()
        specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), inputs)
        self.flops = train_step_flops(self.model, specs, tf.TensorSpec(y.shape, tf.float32))
        warm_up(self.model, self.ds, 3)

    def rate(self, steps: int) -> float:
        return fit_rate(self.model, self.ds, steps, self.batch)


class Encoded:
    """The frozen frame encoder of the video feature cache, encoding a batch of frames."""

    def __init__(self, precision: str):
        self.name, self.batch, self.unit = "frames", FRAME_BATCH, "frame"
        with acceleration.precision_policy(precision):
            self.encoder, _ = build_frame_encoder("efficientnet_lite0", FRAME_SIZE, "none")
        shape = (FRAME_BATCH, FRAME_SIZE, FRAME_SIZE, 3)
        self.x = tf.constant(np.random.default_rng(0).uniform(0, 255, shape), tf.float32)
        self.call = tf.function(lambda x: self.encoder(x, training=False))
        self.flops = graph_flops(lambda x: self.encoder(x, training=False), tf.TensorSpec(shape))
        self.call(self.x).numpy()

    def rate(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            out = self.call(self.x)
        out.numpy()
        return steps * self.batch / (time.perf_counter() - start)


def build(name: str, precision: str):
    if name == "frames":
        return Encoded(precision)
    if name == "video_head":
        spec = VideoExperiment(mixed_precision=precision)
        rng = np.random.default_rng(0)
        feats = rng.normal(size=(spec.batch_size, spec.num_frames, FEATURES)).astype(np.float32)
        inputs = (feats, np.ones((spec.batch_size, spec.num_frames), np.float32))
        make = lambda: video_experiment.head(spec, (FEATURES,), VIDEO_CLASSES)  # noqa: E731
        return Trained(name, spec, make, inputs, VIDEO_CLASSES, 50)
    if name == "seed":
        base = ImageExperiment.from_dict({**ImageExperiment.PRESETS["seed"], "preset": "seed"})
        classes, size, steps_per_epoch = 100, 32, 391  # CIFAR-100's 50,000 / 128
    else:
        base = ImageExperiment(backbone="resnet_small" if name == "resnet_small" else "small_cnn")
        classes, size = NUM_CLASSES, 64
        steps_per_epoch = math.ceil(classes * SYNTHETIC_PER_CLASS / base.batch_size)
    spec = base.replace(mixed_precision=precision)
    x = repeated_batch(spec.batch_size, size, classes).take(1).get_single_element()[0]
    make = lambda: image_experiment.classifier(spec, classes, size)  # noqa: E731
    trained = Trained(name, spec, make, x.numpy(), classes, steps_per_epoch)
    trained.px = size
    return trained


def main() -> None:
    tf.get_logger().setLevel("ERROR")  # the v1 FLOP-statistics API's deprecation notice
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"of {','.join(MODELS)}")
    parser.add_argument("--precisions", default="off,bf16", help="of off,bf16")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many")
    parser.add_argument("--profile-steps", type=int, default=5, help="0: no profile")
    parser.add_argument("--top", type=int, default=8, help="op types shown in the profile")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for p in precisions:
        if p not in DTYPES:
            parser.error(f"unknown precision {p!r}; choose from off, bf16")
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")

    print(machine_line())
    print(f"cpu bfloat16 units: {', '.join(acceleration.cpu_bfloat16_units()) or 'none'}")
    peak = {p: peaks(p) for p in precisions}
    for p in precisions:
        print(
            f"peak {p:>4}: matmul 2048^2 {peak[p]['matmul']:7.0f} GFLOP/s, "
            f"conv 64x32x32x64 3x3 {peak[p]['conv']:7.0f} GFLOP/s"
        )

    t0 = time.perf_counter()
    built = {(m, p): build(m, p) for m in models for p in precisions}
    print(f"built, traced and warmed up {len(built)} models in {time.perf_counter() - t0:.0f} s")
    rates = {key: [] for key in built}
    for _ in range(args.repeats):
        for key, item in built.items():  # interleaved: A B C, A B C, ...
            rates[key].append(item.rate(args.steps))

    print()
    print(
        f"{'model':<13}{'prec':>5}{'batch':>6}{'GFLOP/ex':>10}{'matrix':>8}{'ex/s':>9}"
        f"{'GFLOP/s':>9}{'%matmul':>9}{'%conv':>7}  runs (ex/s)"
    )
    fraction = {}
    for (m, p), item in built.items():
        flops = sum(item.flops.values()) / item.batch
        matrix = sum(v for k, v in item.flops.items() if k in MATRIX_OPS) / item.batch
        rate = statistics.median(rates[m, p])
        achieved = flops * rate / 1e9
        fraction[m, p] = achieved / peak[p]["conv"]
        runs = ", ".join(f"{r:.1f}" for r in rates[m, p])
        print(
            f"{m:<13}{p:>5}{item.batch:>6}{flops / 1e9:10.3f}{100 * matrix / flops:7.0f}%"
            f"{rate:9.1f}{achieved:9.1f}{100 * achieved / peak[p]['matmul']:8.1f}%"
            f"{100 * fraction[m, p]:6.1f}%  {runs}"
        )
    if len(precisions) > 1:
        a, b = precisions[:2]
        print()
        for m in models:
            ratio = statistics.median(rates[m, b]) / statistics.median(rates[m, a])
            print(f"{m}: {b} / {a} speed {ratio:.2f}x")

    if args.profile_steps < 1:
        return
    for precision in precisions:  # the worst training step of each precision
        trained = [k for k in built if isinstance(built[k], Trained) and k[1] == precision]
        if trained:
            worst = min(trained, key=fraction.get)
            print_profile(worst, built[worst], args.profile_steps, args.top)


def print_profile(key: tuple[str, str], item: Trained, steps: int, top: int) -> None:
    with tempfile.TemporaryDirectory() as logdir:
        wall_ms, op_ms = profile_fit(item.model, item.ds, steps, Path(logdir))
    total = sum(op_ms.values())
    print(
        f"\nprofile of the lowest fraction of peak in {key[1]}, {key[0]}: {wall_ms:.1f} ms "
        f"wall per step, {total:.1f} ms of op time per step (all threads)"
    )
    print(f"  {'op type':<34}{'ms/step':>9}{'time':>7}{'MFLOP/step':>12}{'GFLOP/s':>9}")
    for op, ms in sorted(op_ms.items(), key=lambda kv: -kv[1])[:top]:
        mflop = item.flops.get(base_type(op), 0.0) / 1e6
        rate = f"{mflop / ms:9.1f}" if mflop else f"{'-':>9}"
        print(f"  {op:<34}{ms:9.2f}{100 * ms / total:6.1f}%{mflop:12.1f}{rate}")
    matrix_ms = sum(ms for op, ms in op_ms.items() if base_type(op) in MATRIX_OPS)
    print(
        f"  matrix ops (fused forms included) {100 * matrix_ms / total:.0f}% of op time, "
        f"everything else {100 - 100 * matrix_ms / total:.0f}%"
    )


if __name__ == "__main__":
    main()
