"""Where an image training step spends its time, per TensorFlow op type, for each attention.

    python benchmarks/profile_step.py [--backbone small_cnn] [--attention none,channel,spatial,cbam]
        [--steps 10] [--batch 64] [--top 10] [--logdir runs/profile]
        [--mixed-precision auto|on|bf16|off]

Each model is built and compiled exactly as in `image_step.py` (an `ImageExperiment()`'s
settings, compiled by the run's trainer, `compile_for_training`), warmed
up, then `--steps` training steps run under TensorFlow's profiler
(`tf.profiler.experimental.start/stop`). The trace lands in `<logdir>/<attention>/` (open it
in TensorBoard's Profile tab, with the tensorboard-plugin-profile package) and is summed here
from its `.xplane.pb`: the host CPU plane's op events (`name:Type`) grouped by op type, as
milliseconds per step. Op times on the executor's threads add up across threads, so the
total can exceed the wall time of a step; the wall time per step (`StepClock`: the steps,
not the whole `fit`) is printed beside.

The last table puts each attention's op types beside `none`'s: the extra milliseconds per
step, by op type, are what the attention costs and where.
"""

from __future__ import annotations

import argparse
import collections
import math
from pathlib import Path

import keras
import tensorflow as tf
from image_step import (
    NUM_CLASSES,
    SIZES,
    StepClock,
    compiled_image_model,
    machine_line,
    repeated_batch,
    warm_up,
)
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from keras_attn.data.images import SYNTHETIC_PER_CLASS
from keras_attn.experiments.image import ImageExperiment
from keras_attn.layers import attention_names
from keras_attn.training import acceleration


def op_times_ms(logdir: Path) -> dict[str, float]:
    """Total milliseconds per TF op type in the newest trace under `logdir`."""
    traces = sorted(logdir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    space = xplane_pb2.XSpace()
    space.ParseFromString(traces[-1].read_bytes())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                # Kernel executions are "op_name:OpType"; framework events have no colon
                # or a "::" (tf.data iterators, executor bookkeeping), and the call of the
                # whole traced step ("...:__inference_...") encloses the kernels.
                if ":" not in name or "::" in name:
                    continue
                op_type = name.rsplit(":", 1)[1].strip()
                if not op_type.startswith("__inference"):
                    totals[op_type] += event.duration_ps / 1e9
    return dict(totals)


def profile_fit(
    model: keras.Model, ds: tf.data.Dataset, steps: int, logdir: Path
) -> tuple[float, dict[str, float]]:
    """`steps` training steps of a compiled, warmed-up `model` under the profiler: the wall
    milliseconds per step and the milliseconds per step of each op type."""
    clock = StepClock()
    tf.profiler.experimental.start(str(logdir))
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[clock])
    tf.profiler.experimental.stop()
    ops = {k: v / steps for k, v in op_times_ms(logdir).items()}
    return 1e3 * clock.seconds / steps, ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="small_cnn", choices=sorted(SIZES))
    parser.add_argument("--attention", default="none,channel,spatial,cbam")
    parser.add_argument("--steps", type=int, default=10, help="profiled training steps")
    parser.add_argument("--batch", type=int, default=ImageExperiment().batch_size)
    parser.add_argument("--top", type=int, default=10, help="op types shown per model")
    parser.add_argument("--logdir", default="runs/profile")
    parser.add_argument(
        "--mixed-precision",
        default=ImageExperiment().mixed_precision,
        choices=acceleration.PRECISIONS,
        help="as a run's --mixed-precision (default: the experiment's)",
    )
    args = parser.parse_args()
    attentions = [a for a in args.attention.split(",") if a]
    for a in attentions:
        if a not in attention_names():
            parser.error(f"unknown attention {a!r}; choose from {', '.join(attention_names())}")
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if "none" not in attentions:
        attentions.insert(0, "none")

    size = SIZES[args.backbone]
    spec = ImageExperiment().replace(
        backbone=args.backbone, batch_size=args.batch, mixed_precision=args.mixed_precision
    )
    steps_per_epoch = math.ceil(
        NUM_CLASSES * (spec.train_per_class or SYNTHETIC_PER_CLASS) / spec.batch_size
    )
    ds = repeated_batch(args.batch, size, NUM_CLASSES)
    print(machine_line())
    print(
        f"{args.backbone} at {size} px, batch {args.batch}, {args.steps} profiled steps, "
        f"{acceleration.precision_line(spec.mixed_precision, spec.BF16_PAYS_ON_CPU)}"
    )

    per_step: dict[str, dict[str, float]] = {}
    for attention in attentions:
        model = compiled_image_model(spec.replace(attention=attention), steps_per_epoch)
        warm_up(model, ds, 3)
        logdir = Path(args.logdir) / attention
        wall_ms, ops = profile_fit(model, ds, args.steps, logdir)
        per_step[attention] = ops
        print(
            f"\n{attention}: {wall_ms:.1f} ms wall per step, {sum(ops.values()):.1f} ms of op "
            f"time per step (all threads); trace in {logdir}"
        )
        for op, ms in sorted(ops.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {op:<36}{ms:8.2f} ms  {100 * ms / sum(ops.values()):5.1f}%")

    base = per_step["none"]
    for attention in attentions[1:]:
        ops = per_step[attention]
        extra = {op: ops.get(op, 0.0) - base.get(op, 0.0) for op in set(ops) | set(base)}
        total = sum(ops.values()) - sum(base.values())
        print(f"\n{attention} - none: {total:+.1f} ms of op time per step; largest differences:")
        for op, ms in sorted(extra.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
            print(f"  {op:<36}{ms:+8.2f} ms")


if __name__ == "__main__":
    main()
