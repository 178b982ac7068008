"""Mixed precision with XLA: do the attention models train as in float32, and how much faster?

    KERAS_BACKEND=jax python benchmarks/gpu_mixed_precision.py [--quick] [--policies ...]
        [--backbones small_cnn,mobilenet_v2] [--attention none,channel,spatial,cbam,linear]
        [--temporal avg,max,...] [--frame-attention spatial,cbam] [--train-steps 50]
        [--repeats 3] [--batch 64] [--time-limit SECONDS]

Meant for a GPU, and for Keras' JAX backend where TensorFlow is not installed (JAX always
compiles with XLA; `import keras_attn` skips TensorFlow on other backends). It runs on any
backend and device and prints which it ran on; `compile(jit_compile=True)` except on torch.

Models, all random weights, seed 0:
- images: `build_image_model(6, size, backbone, attention, weights="none")` with the image
  experiment's defaults (dropout 0.2, reduction 8, kernel 7) for every attention of
  `attention_names()` on small_cnn (64 px) and mobilenet_v2 (96 px); batch 64 images.
- video: `build_video_head` with the video experiment's defaults (width 128, dropout 0.5,
  TCN filters 128, attention pooling, 10 classes) for every temporal module of
  `temporal_names()` on random pooled features shaped like the MobileNetV2 encoder's at
  96 px for 8 frames, (8, 1280); plus tcn with frame attention (spatial, cbam) on its feature
  maps, (8, 3, 3, 1280). Masks pad some clips (4 to 8 valid frames); batch 64 clips.

Policies: float32, mixed_float16, mixed_bfloat16. Each model is built, compiled and trained
under its policy (`keras.config.set_dtype_policy`), its output cast to float32 as
`keras_attn.training.acceleration.float32_logits` does (a float32 linear Activation), so the
loss and softmax run in float32. AdamW (images: lr 2e-3, weight decay 5e-4; video: 1e-3,
1e-4; constant rate), `CategoricalCrossentropy(from_logits=True)`; under mixed_float16
`compile` wraps the optimizer in a LossScaleOptimizer itself (checked).

1. Correctness. The float32 model's BatchNorm statistics are set from the fixed random batch
   (`calibrate_batchnorm`: random MobileNetV2 features vanish with the initial statistics),
   then its weights are copied into each mixed model. Logits in inference mode on that
   batch are compared with the float32 model's computed at full float32 matmul precision
   (on JAX, `default_matmul_precision("highest")`; the float32 row then shows what the
   default precision (TF32 on recent GPUs) changes): max |diff| and max |diff| / max
   |float32 logit|. Then each model trains `--train-steps` steps on the same batch (one
   `fit` epoch per step, so every step's loss is recorded); the table gives the first and
   final loss and whether every loss was finite. The logits must be float32 in every policy.
2. Speed. Training images (clips) per second: `fit` on that batch, held on the device and
   repeated by a generator, so the step alone is timed. Compilation and a warm-up `fit` are
   excluded; each measurement runs enough steps for about `--seconds` (at least
   `--min-steps`), synchronised on a weight at the end; each repeat measures every model of
   a group once, in turn; the table gives the median of `--repeats`. overhead = baseline
   rate / rate - 1 under the same policy (images: none on the same backbone; video: avg);
   vs f32 = rate / float32 rate of the same model.

Verdict per model: FAILED when it could not be built or trained (the error is printed and
the other models go on); CHECK when a loss is not finite, the logits are not float32, the
relative logit difference exceeds 2% (float16) or 10% (bfloat16), a mixed model's loss fell
by less than half as much as float32's (when float32's fell), or mixed_float16 got no
LossScaleOptimizer.

Run time: XLA compilation dominates. With a GPU the three groups (small_cnn, mobilenet_v2,
video) run in parallel processes (`--jobs`, default 3 with a GPU, else 1; JAX's memory
preallocation is off so they share it); each takes a shared lock while it trains or times,
so timings do not overlap. Measured on one H100 (JAX 0.11.2, 2026-11-25): compiling a
training step took 4-25 s per small_cnn model (linear attention the slowest), 2-14 s per
video head and 35-105 s per mobilenet_v2 model (mixed the slowest), so the full default run
takes roughly 20 minutes, set by mobilenet_v2; `--time-limit S` stops starting models after
S seconds per group (the table marks the rest "not run")."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import functools
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX takes 75% of the GPU's memory up front by default; the parallel groups share the GPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_attn.files import atomic_write_text  # noqa: E402
from keras_attn.layers import attention_names, temporal_names  # noqa: E402
from keras_attn.models.image import build_image_model  # noqa: E402
from keras_attn.models.video import build_video_head, calibrate_batchnorm  # noqa: E402

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
SHORT = {"float32": "f32", "mixed_float16": "f16", "mixed_bfloat16": "bf16"}
TOLERANCE = {"mixed_float16": 0.02, "mixed_bfloat16": 0.10}  # relative logit difference
SIZES = {"small_cnn": 64, "mobilenet_v2": 96}
IMAGE_CLASSES, VIDEO_CLASSES = 6, 10
FRAMES, FEATURES, MAP = 8, 1280, (3, 3, 1280)  # MobileNetV2 at 96 px: pooled, feature map
SEED = 0
GROUP_ORDER = ("small_cnn", "mobilenet_v2", "video")  # of the report


@dataclass
class Variant:
    group: str  # backbone, or "video"
    name: str  # attention, or temporal module (+ frame attention)
    build: object  # () -> keras.Model
    inputs: object  # numpy array, or (features, mask)
    labels: np.ndarray
    lr: float
    weight_decay: float
    calibrate: bool  # set BatchNorm statistics from the batch (image models)
    models: dict = field(default_factory=dict)  # policy -> compiled model
    results: dict = field(default_factory=dict)  # policy -> dict
    rates: dict = field(default_factory=dict)  # policy -> [items/s]
    error: str | None = None  # why it could not be built, compiled or trained

    @property
    def label(self) -> str:
        return f"{self.group}/{self.name}"


def backend_line() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        devices = jax.devices()
        dev = devices[0]
        return (
            f"backend: jax {jax.__version__} (XLA), device: {dev.platform} {dev.device_kind} "
            f"({len(devices)} visible)"
        )
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            name = f"gpu {details.get('device_name', gpus[0].name)} ({len(gpus)} visible)"
        else:
            name = f"cpu {platform.machine()} (no GPU visible)"
        return f"backend: tensorflow {tf.__version__} (jit_compile=True), device: {name}"
    if backend == "torch":
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        return f"backend: torch {torch.__version__}, device: {name}"
    return f"backend: {backend}"


def gpu_visible() -> bool:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform == "gpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def machine_line() -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"machine: os.cpu_count()={os.cpu_count()}, {platform.machine()}, Python "
        f"{platform.python_version()}, Keras {keras.__version__}; {date}"
    )


@contextlib.contextmanager
def dtype_policy(name: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def full_float32():
    """Float32 matmuls and convolutions without TF32 (JAX's default precision allows it)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def float32_logits(model: keras.Model) -> keras.Model:
    """As keras_attn.training.acceleration.float32_logits (which imports TensorFlow)."""
    if model.output.dtype == "float32":
        return model
    logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(model.output)
    return keras.Model(model.input, logits, name=model.name)


def forward(model: keras.Model, inputs, training: bool = False):
    """`model(inputs)`; on JAX one compiled call (Keras' eager JAX runs op by op, slowly).

    With `training` on JAX, the updated non-trainable state (BatchNorm statistics) is
    written back, as an eager call would."""
    if keras.backend.backend() != "jax":
        return model(inputs, training=training)
    import jax

    call = jax.jit(functools.partial(model.stateless_call, training=training))
    outputs, state = call(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        inputs,
    )
    if training:
        for variable, value in zip(model.non_trainable_variables, state, strict=True):
            variable.assign(value)
    return outputs


def calibrate(model: keras.Model, inputs) -> None:
    """`keras_attn.models.video.calibrate_batchnorm`, with its pass compiled on JAX."""
    if keras.backend.backend() != "jax":
        calibrate_batchnorm(model, inputs)
        return
    norms = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    saved = [(layer.momentum, layer.trainable) for layer in norms]
    for layer in norms:
        layer.momentum, layer.trainable = 0.0, True
    try:
        forward(model, inputs, training=True)
    finally:
        for layer, (momentum, trainable) in zip(norms, saved, strict=True):
            layer.momentum, layer.trainable = momentum, trainable


def calibrate_keeping_seeds(model: keras.Model, inputs) -> None:
    """`calibrate`, leaving the dropout seeds as built, so the first training step draws
    the same dropout masks as the mixed models' (which get weights, not seeds, copied)."""
    states = [
        (generator.state, keras.ops.convert_to_numpy(generator.state.value))
        for layer in model._flatten_layers()
        for generator in getattr(layer, "_seed_generators", [])
    ]
    calibrate(model, inputs)
    for variable, value in states:
        variable.assign(value)


@contextlib.contextmanager
def gpu_lock(path: str | None):
    """Held while a process trains or times, so parallel groups only overlap compiling."""
    if not path:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def on_device(data):
    """The batch as the backend's arrays (on JAX: on the accelerator, so `fit` copies nothing)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.tree_util.tree_map(jax.device_put, data)
    return data


def repeated(batch):
    def generate():
        while True:
            yield batch

    return generate()


def sync(model: keras.Model) -> None:
    """Waits for the last step: every output of a compiled step is ready together."""
    keras.ops.convert_to_numpy(model.trainable_variables[-1].value)


def image_variants(args) -> list[Variant]:
    variants = []
    rng = np.random.default_rng(SEED)
    for backbone in args.backbones:
        size = SIZES[backbone]
        x = rng.uniform(0, 255, (args.batch, size, size, 3)).astype(np.float32)
        y = np.eye(IMAGE_CLASSES, dtype=np.float32)[rng.integers(0, IMAGE_CLASSES, args.batch)]
        for attention in args.attention:
            build = functools.partial(
                build_image_model,
                IMAGE_CLASSES,
                size,
                backbone=backbone,
                attention=attention,
                weights="none",
                dropout=0.2,
                seed=SEED,
                attention_options=dict(reduction=8, kernel_size=7),
            )
            variants.append(Variant(backbone, attention, build, x, y, 2e-3, 5e-4, True))
    return variants


def video_variants(args) -> list[Variant]:
    rng = np.random.default_rng(SEED + 1)
    batch = args.batch
    valid = rng.integers(4, FRAMES + 1, batch)
    valid[0] = FRAMES  # at least one full clip
    mask = np.arange(FRAMES)[None, :] < valid[:, None]
    y = np.eye(VIDEO_CLASSES, dtype=np.float32)[rng.integers(0, VIDEO_CLASSES, batch)]
    # Pooled ReLU6 features are non-negative, mostly O(0.1-1).
    pooled = np.abs(rng.normal(0, 1, (batch, FRAMES, FEATURES))).astype(np.float32)
    maps = np.abs(rng.normal(0, 1, (batch, FRAMES, *MAP))).astype(np.float32)
    specs = [(t, "none") for t in args.temporal]
    specs += [("tcn", fa) for fa in args.frame_attention]
    variants = []
    for temporal, frame_attention in specs:
        features = pooled if frame_attention == "none" else maps
        build = functools.partial(
            build_video_head,
            features.shape[2:],
            FRAMES,
            VIDEO_CLASSES,
            temporal=temporal,
            frame_attention=frame_attention,
            width=128,
            dropout=0.5,
            seed=SEED,
            temporal_options=dict(filters=128, pool="attention"),
        )
        name = temporal if frame_attention == "none" else f"{temporal}+{frame_attention}"
        variants.append(Variant("video", name, build, (features, mask), y, 1e-3, 1e-4, False))
    return variants


def build_compiled(variant: Variant, policy: str) -> keras.Model:
    with dtype_policy(policy):
        keras.utils.set_random_seed(SEED)
        model = float32_logits(variant.build())
        model.compile(
            optimizer=keras.optimizers.AdamW(variant.lr, weight_decay=variant.weight_decay),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            jit_compile=keras.backend.backend() != "torch",
        )
    return model


def check(variant: Variant, policies: list[str], train_steps: int, lock: str | None, log) -> None:
    """Logit agreement after copying the float32 weights, then `train_steps` steps each."""
    reference = None
    for policy in policies:
        model = build_compiled(variant, policy)
        if reference is None:  # float32 comes first
            if variant.calibrate:
                calibrate_keeping_seeds(model, variant.inputs)
            weights = model.get_weights()
            with full_float32():
                reference = keras.ops.convert_to_numpy(forward(model, variant.inputs))
        else:
            model.set_weights(weights)
        logits = forward(model, variant.inputs)
        dtype = keras.backend.standardize_dtype(logits.dtype)
        diff = np.abs(keras.ops.convert_to_numpy(logits).astype(np.float64) - reference)
        scale = float(np.max(np.abs(reference)))
        variant.models[policy] = model
        variant.results[policy] = dict(
            dtype=dtype,
            raw_dtype=keras.backend.standardize_dtype(model.get_layer("logits").compute_dtype),
            max_diff=float(np.max(diff)),
            rel_diff=float(np.max(diff)) / scale if scale else math.inf,
            loss_scaled=isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer),
        )

    data = on_device((variant.inputs, variant.labels))
    for policy in policies:
        model, result = variant.models[policy], variant.results[policy]
        start = time.perf_counter()
        first = model.fit(repeated(data), steps_per_epoch=1, verbose=0, shuffle=False)
        compiled = time.perf_counter() - start
        with gpu_lock(lock):  # the first step compiles, off the lock; the others run under it
            start = time.perf_counter()
            rest = model.fit(
                repeated(data),
                steps_per_epoch=1,
                epochs=train_steps - 1,
                verbose=0,
                shuffle=False,
            )
            trained = time.perf_counter() - start
        losses = [float(v) for v in first.history["loss"] + rest.history.get("loss", [])]
        result.update(
            losses=losses,
            finite=bool(np.all(np.isfinite(losses))),
            first_step_s=compiled,
            train_s=trained,
        )
        if result["loss_scaled"]:
            result["final_scale"] = float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))
        scale = f", loss scale {result['final_scale']:g}" if "final_scale" in result else ""
        log(
            f"  {variant.label:<22} {policy:<15} logits {result['dtype']} "
            f"(Dense {result['raw_dtype']}), max|d| {result['max_diff']:.2e} rel "
            f"{result['rel_diff']:.2e}; loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
            f"finite {result['finite']}{scale}; first step (compile) "
            f"{result['first_step_s']:.1f} s, {train_steps - 1} more steps "
            f"{result['train_s']:.1f} s"
        )


def time_group(variants: list[Variant], policies, args, log) -> None:
    """Warm-up `fit`s in the timed order, then `--repeats` interleaved measurements."""
    models = [(v, p, v.models[p]) for v in variants for p in policies]
    data = {id(v): on_device((v.inputs, v.labels)) for v in variants}
    steps = {}
    for v, p, model in models:
        model.fit(repeated(data[id(v)]), steps_per_epoch=1, verbose=0, shuffle=False)
        sync(model)
        start = time.perf_counter()
        model.fit(repeated(data[id(v)]), steps_per_epoch=args.warmup, verbose=0, shuffle=False)
        sync(model)
        per_step = (time.perf_counter() - start) / args.warmup
        steps[id(v), p] = max(args.min_steps, math.ceil(args.seconds / per_step))
    for _ in range(args.repeats):
        for v, p, model in models:
            n = steps[id(v), p]
            start = time.perf_counter()
            model.fit(repeated(data[id(v)]), steps_per_epoch=n, verbose=0, shuffle=False)
            sync(model)
            v.rates.setdefault(p, []).append(n * args.batch / (time.perf_counter() - start))
    log(
        f"  timed {len(models)} models, steps per measurement "
        f"{min(steps.values())}-{max(steps.values())}"
    )


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def report(variants: list[Variant], policies, args, log) -> None:
    baseline = {}
    for v in variants:
        if v.name in ("none", "avg"):
            baseline[v.group] = v
    header = (
        f"{'model':<22} {'policy':<15} {'logits':<8} {'max|d|':>8} {'rel d':>8} "
        f"{'loss first->final':>18} {'finite':>6} {'per s':>9} {'over.':>7} {'vs f32':>6}"
    )
    log("")
    log(header)
    log("-" * len(header))
    for v in variants:
        if v.error:
            log(f"{v.label:<22} FAILED: {v.error[:90]}")
            continue
        for p in policies:
            r = v.results.get(p)
            if r is None or "losses" not in r:
                log(f"{v.label:<22} {p:<15} (not run)")
                continue
            rate = statistics.median(v.rates[p]) if v.rates.get(p) else None
            base = baseline.get(v.group)
            over = None
            if rate and base is not None and base is not v and base.rates.get(p):
                over = statistics.median(base.rates[p]) / rate - 1
            f32 = statistics.median(v.rates["float32"]) if v.rates.get("float32") else None
            speedup = rate / f32 if rate and f32 and p != "float32" else None
            losses = f"{r['losses'][0]:.4f}->{r['losses'][-1]:.4f}"
            log(
                f"{v.label:<22} {p:<15} {r['dtype']:<8} {r['max_diff']:8.1e} "
                f"{r['rel_diff']:8.1e} {losses:>18} {'yes' if r['finite'] else 'NO':>6} "
                f"{fmt(rate, '9.1f', '        -')} {fmt(over and 100 * over, '+6.1f', '     -')}"
                f"{'%' if over is not None else ' '} {fmt(speedup, '5.2f', '    -')}"
                f"{'x' if speedup is not None else ' '}"
            )
    log("")
    log(
        "max|d|, rel d: inference logits against float32 at full matmul precision (float32 "
        "row: the default precision's own difference); per s: training images or clips per "
        "second (median); over.: overhead against none (images) or avg (video), same policy"
    )
    log("")
    checks = 0
    for v in variants:
        r = v.results
        if v.error:
            checks += 1
            log(f"{v.label}: FAILED ({v.error})")
            continue
        if not all(p in r and "losses" in r[p] for p in policies):
            log(f"{v.label}: not run (time limit)")
            continue
        problems = []
        for p in policies:
            if not r[p]["finite"]:
                problems.append(f"{SHORT[p]} loss not finite")
            if r[p]["dtype"] != "float32":
                problems.append(f"{SHORT[p]} logits {r[p]['dtype']}")
            if p in TOLERANCE and not r[p]["rel_diff"] <= TOLERANCE[p]:
                problems.append(f"{SHORT[p]} rel logit diff {r[p]['rel_diff']:.1e}")
            if p == "mixed_float16" and not r[p]["loss_scaled"]:
                problems.append("f16 without LossScaleOptimizer")
        if "float32" in r:
            drop32 = r["float32"]["losses"][0] - r["float32"]["losses"][-1]
            for p in policies:
                drop = r[p]["losses"][0] - r[p]["losses"][-1]
                if p != "float32" and drop32 > 0 and not drop >= 0.5 * drop32:
                    problems.append(f"{SHORT[p]} loss fell {drop:.3f} vs f32 {drop32:.3f}")
        checks += bool(problems)
        mixed = [p for p in policies if p != "float32"]
        diffs = ", ".join(
            f"{SHORT[p]} {r[p]['max_diff']:.1e} (rel {r[p]['rel_diff']:.1e})" for p in mixed
        )
        finals = ", ".join(f"{SHORT[p]} {r[p]['losses'][-1]:.4f}" for p in policies)
        f32 = statistics.median(v.rates["float32"]) if v.rates.get("float32") else None
        speed = ", ".join(
            f"{SHORT[p]} {statistics.median(v.rates[p]) / f32:.2f}x"
            for p in mixed
            if v.rates.get(p) and f32
        )
        finite = "all losses finite" if all(r[p]["finite"] for p in policies) else "NON-FINITE"
        log(
            f"{v.label}: {'CHECK (' + '; '.join(problems) + ')' if problems else 'OK'}; "
            f"{finite}; logits float32 "
            f"{'yes' if all(r[p]['dtype'] == 'float32' for p in policies) else 'NO'}; "
            f"logit diff {diffs or '-'}; final loss {finals}; speed-up over f32 {speed or '-'}"
        )
    log("")
    log(f"{checks} of {len(variants)} models flagged CHECK or FAILED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--backbones", default=",".join(SIZES), help=f"of {','.join(SIZES)}")
    parser.add_argument("--attention", default=",".join(attention_names()))
    parser.add_argument("--temporal", default=",".join(temporal_names()))
    parser.add_argument("--frame-attention", default="spatial,cbam", help="with tcn; '' for none")
    parser.add_argument("--batch", type=int, default=64, help="images or clips per step")
    parser.add_argument("--train-steps", type=int, default=50, help="correctness training")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before timing")
    parser.add_argument("--seconds", type=float, default=0.3, help="per speed measurement")
    parser.add_argument("--min-steps", type=int, default=20, help="per speed measurement")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many")
    parser.add_argument(
        "--time-limit", type=float, default=0, help="skip models not started by then (s)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: few models, steps and images"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="groups in parallel processes; default: one per group with a GPU, else 1",
    )
    parser.add_argument("--results", help=argparse.SUPPRESS)  # a group's process: JSON here
    parser.add_argument("--gpu-lock", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.backbones, args.attention, args.temporal = "small_cnn", "none,cbam", "avg,tcn"
        args.frame_attention, args.batch, args.train_steps = "spatial", 4, 3
        args.warmup, args.seconds, args.min_steps, args.repeats = 1, 0.0, 2, 1
    for name in ("policies", "backbones", "attention", "temporal", "frame_attention"):
        setattr(args, name, [s for s in getattr(args, name).split(",") if s])
    valid = dict(
        policies=POLICIES,
        backbones=SIZES,
        attention=attention_names(),
        temporal=temporal_names(),
        frame_attention=("spatial", "cbam"),
    )
    for name, choices in valid.items():
        for s in getattr(args, name):
            if s not in choices:
                parser.error(f"unknown {name} {s!r}; choose from {', '.join(choices)}")
    if "float32" in args.policies:
        args.policies.remove("float32")
    args.policies.insert(0, "float32")  # the reference
    if args.attention and "none" not in args.attention:
        args.attention.insert(0, "none")
    if args.temporal and "avg" not in args.temporal:
        args.temporal.insert(0, "avg")

    def log(line: str) -> None:
        print(line, flush=True)

    if args.results:  # a group's process: the parent printed the header
        run_groups(args, log)
        return
    if not args.jobs:
        args.jobs = 3 if gpu_visible() else 1
    log(backend_line())
    log(machine_line())
    log(
        f"policies {', '.join(args.policies)}; batch {args.batch}; {args.train_steps} training "
        f"steps on one fixed random batch; speed: >= {args.min_steps} steps or ~{args.seconds} s "
        f"per measurement, median of {args.repeats}"
    )
    if args.jobs > 1:
        run_parallel(args, log)
    else:
        run_groups(args, log)


def run_groups(args, log) -> None:
    """Checks and times every selected model; reports, or writes JSON for the parent."""
    start = time.perf_counter()
    groups: dict[str, list[Variant]] = {}
    variants = image_variants(args) + video_variants(args)
    # Cheapest first, so a --time-limit leaves out the expensive models.
    cost = {"small_cnn": 0, "video": 1, "mobilenet_v2": 2}
    for v in sorted(variants, key=lambda v: cost[v.group]):
        groups.setdefault(v.group, []).append(v)
    done = []
    for group, variants in groups.items():
        log(f"[{time.perf_counter() - start:6.0f} s] {group}: building, comparing, training")
        ran = []
        for v in variants:
            if args.time_limit and time.perf_counter() - start > args.time_limit:
                log(f"  {v.label}: skipped (time limit {args.time_limit:.0f} s)")
                continue
            try:
                check(v, args.policies, args.train_steps, args.gpu_lock, log)
            except Exception as err:  # report it and go on with the other models
                v.error = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
                v.models.clear()
                log(f"  {v.label}: FAILED: {v.error}")
                continue
            ran.append(v)
        if ran:
            with gpu_lock(args.gpu_lock):
                log(f"[{time.perf_counter() - start:6.0f} s] {group}: timing")
                time_group(ran, args.policies, args, log)
        for v in variants:
            v.models.clear()
        keras.backend.clear_session()
        gc.collect()
        done.extend(variants)
    log(f"[{time.perf_counter() - start:6.0f} s] {', '.join(groups)}: done")
    if args.results:
        fields = ("group", "name", "results", "rates", "error")
        rows = [{k: getattr(v, k) for k in fields} for v in done]
        atomic_write_text(args.results, json.dumps(rows))
    else:
        report(done, args.policies, args, log)


def run_parallel(args, log) -> None:
    """One process per group (small_cnn, mobilenet_v2, video), `args.jobs` at a time.

    Compilation (XLA, one CPU core per process) dominates the run; training and timing
    take a shared lock, so only one process uses the GPU for them at a time."""
    start = time.perf_counter()
    common = [
        f"--policies={','.join(args.policies)}",
        f"--attention={','.join(args.attention)}",
        f"--batch={args.batch}",
        f"--train-steps={args.train_steps}",
        f"--warmup={args.warmup}",
        f"--seconds={args.seconds}",
        f"--min-steps={args.min_steps}",
        f"--repeats={args.repeats}",
        f"--time-limit={args.time_limit}",
        "--jobs=1",
    ]
    video = [f"--temporal={','.join(args.temporal)}"]
    video += [f"--frame-attention={','.join(args.frame_attention)}"]
    none = ["--temporal=", "--frame-attention="]
    groups = [(b, [f"--backbones={b}", *none]) for b in args.backbones]
    if args.temporal or args.frame_attention:
        groups.insert(0, ("video", ["--backbones=", *video]))
    # The most expensive first, so it starts at once.
    groups.sort(key=lambda g: {"mobilenet_v2": 0, "small_cnn": 1}.get(g[0], 2))
    workdir = Path(tempfile.mkdtemp(prefix="gpu_mixed_precision_"))
    lock = str(workdir / "gpu.lock")
    running, finished = [], {}
    log(
        f"{len(groups)} groups in {args.jobs} parallel processes: {', '.join(g for g, _ in groups)}"
    )
    for group, options in groups:
        while len(running) >= args.jobs:
            time.sleep(1)
            for item in running[:]:
                if item[1].poll() is not None:
                    running.remove(item)
                    finished[item[0]] = item[1].returncode
        results = workdir / f"{group}.json"
        cmd = [sys.executable, __file__, *common, *options]
        cmd += [f"--results={results}", f"--gpu-lock={lock}"]
        running.append((group, subprocess.Popen(cmd)))
    for group, process in running:
        finished[group] = process.wait()
    done = []
    for group in GROUP_ORDER:
        if group not in finished:
            continue
        path = workdir / f"{group}.json"
        if finished[group] != 0 or not path.exists():
            log(f"{group}: its process failed (exit status {finished[group]})")
            continue
        for row in json.loads(path.read_text()):
            variant = Variant(row["group"], row["name"], None, None, None, 0.0, 0.0, False)
            variant.results, variant.rates = row["results"], row["rates"]
            variant.error = row["error"]
            done.append(variant)
    log(f"[{time.perf_counter() - start:6.0f} s] all groups done")
    report(done, args.policies, args, log)


if __name__ == "__main__":
    main()
