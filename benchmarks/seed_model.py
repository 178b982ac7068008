"""Training images/s of the original study's image model under CPU speed settings.

    python benchmarks/seed_model.py [--steps 16] [--repeats 3] [--threads default,1,N/1]
        [--jit off,on] [--steps-per-execution 1,8]

The model is `build_image_model(100, 32, backbone="densenet", attention="linear")` (CIFAR-100's
100 classes, 32x32 inputs) with the settings of `--preset seed` (`ImageExperiment` with
`ImageExperiment.PRESETS["seed"]`): batch 128, AdamW 3e-4, weight decay 1e-4, cosine, label
smoothing 0.1, seed 42; compiled by the run's trainer, `compile_for_training` (stability
metrics, float32 logits, optimizer, loss, metrics=["accuracy"], the precision policy "auto"
resolves to), with the spec's settings compared side by side:

- `jit_compile` off / on (XLA);
- `steps_per_execution` 1 / 8 (8 steps per call into the graph). The trainer cuts it to a
  divisor of the epoch, and CIFAR's 391 steps per epoch (17 x 23) would cut 8 to 1, so the
  schedule's epoch here is 391 rounded up to a multiple of every value compared (392);
- TensorFlow's thread pools: "default", or "N" (intra-op threads, via
  `tf.config.threading.set_intra_op_parallelism_threads`) or "N/M" (intra/inter-op).
  Threading must be set before TensorFlow runs any op, so each threading configuration lives
  in its own subprocess of this script, which builds, compiles and warms up one model per
  (jit, steps_per_execution) pair, then times whichever it is told to.

After warm-up (tracing and XLA compilation excluded), each measurement times
the steps of `model.fit(ds, epochs=1, steps_per_epoch=steps)` (`image_step.StepClock`:
first step's start to last step's end) on one in-memory batch repeated
(`Dataset.from_tensors((x, y_onehot)).repeat()`), steps rounded up to a multiple of every
steps_per_execution. Each repeat measures every setting once, in turn (the subprocesses not
being measured wait, idle); the table gives medians and the speed-up against what a run does
today on this CPU (default threads, jit off, 1 step per execution). No goal: a measurement.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

NUM_CLASSES, IMAGE_SIZE = 100, 32
CIFAR_TRAIN = 50_000
RESULT = "RESULT "


def parse_threads(spec: str) -> tuple[int, int] | None:
    """ "default" -> None; "N" -> (N, 0); "N/M" -> (N, M) (0: TensorFlow's default)."""
    if spec == "default":
        return None
    intra, _, inter = spec.partition("/")
    return int(intra), int(inter or 0)


def threads_label(spec: str) -> str:
    threads = parse_threads(spec)
    if threads is None:
        return "default"
    intra, inter = threads
    return f"intra {intra}" + (f", inter {inter}" if inter else "")


def child(args) -> None:
    """One threading configuration: build every (jit, spe) model, then time on request."""
    threads = parse_threads(args.child)
    if threads is not None:  # before any op runs
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        if threads[1]:
            tf.config.threading.set_inter_op_parallelism_threads(threads[1])

    import numpy as np
    from image_step import fit_rate, image_model, warm_up

    from keras_attn.training.run import compile_for_training

    spec = seed_spec()
    steps_per_epoch = math.lcm(*args.spe) * math.ceil(
        math.ceil(CIFAR_TRAIN / spec.batch_size) / math.lcm(*args.spe)
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (spec.batch_size, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, spec.batch_size)]
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()

    models = []
    for jit, spe in variants(args):
        setting = spec.replace(jit_compile="on" if jit else "off", steps_per_execution=spe)
        model = compile_for_training(
            image_model(setting, NUM_CLASSES, IMAGE_SIZE), setting, steps_per_epoch
        )
        if model.steps_per_execution != spe:
            raise RuntimeError(f"steps_per_execution {spe} became {model.steps_per_execution}")
        warm_up(model, ds, args.warmup)
        models.append(model)
    for model in models:  # a second untimed call
        warm_up(model, ds, 1)
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    print(f"READY intra={intra} inter={inter}", flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "QUIT":
            break
        rate = fit_rate(models[int(command[1])], ds, args.steps, spec.batch_size)
        print(f"{RESULT}{rate}", flush=True)


def seed_spec():
    """The settings of `--preset seed` (random weights: the spec's default)."""
    from keras_attn.experiments.image import ImageExperiment

    return ImageExperiment.from_dict({**ImageExperiment.PRESETS["seed"], "preset": "seed"})


def variants(args) -> list[tuple[bool, int]]:
    jits = [{"off": False, "on": True}[j] for j in args.jit.split(",")]
    return [(jit, spe) for jit in jits for spe in args.spe]


class Child:
    """A subprocess of this script for one threading configuration."""

    def __init__(self, spec: str, args):
        command = [sys.executable, __file__, "--child", spec, "--jit", args.jit]
        command += ["--steps-per-execution", ",".join(map(str, args.spe))]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        self.spec = spec
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def read(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise RuntimeError(f"threads {self.spec}: subprocess exited ({self.proc.wait()})")

    def measure(self, index: int) -> float:
        self.proc.stdin.write(f"RUN {index}\n")
        self.proc.stdin.flush()
        return float(self.read(RESULT))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("QUIT\n")
            self.proc.stdin.close()
            self.proc.wait()


def main() -> None:
    import datetime
    import platform

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    n = os.cpu_count() or 1
    default_threads = ",".join(dict.fromkeys(["default", "1", f"{n}/1"]))
    parser.add_argument("--steps", type=int, default=16, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="median over this many")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps first (at least 1 call)"
    )
    parser.add_argument("--threads", default=default_threads, help="default | N | N/M, ...")
    parser.add_argument("--jit", default="off,on", help="jit_compile values: off,on")
    parser.add_argument("--steps-per-execution", dest="spe", default="1,8")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.spe = [int(s) for s in str(args.spe).split(",")]
    if any(j not in ("off", "on") for j in args.jit.split(",")):
        parser.error("--jit takes off, on or off,on")
    for spec in args.threads.split(","):
        try:
            parse_threads(spec)
        except ValueError:
            parser.error(f"--threads: {spec!r} is not default, N or N/M")
    multiple = math.lcm(*args.spe)
    args.steps = multiple * math.ceil(args.steps / multiple)
    if args.child:
        child(args)
        return

    import keras

    seed = seed_spec()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"machine: os.cpu_count()={n}, {platform.machine()}, Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}; "
        f"load average {load}; {date}"
    )
    print(
        f"{seed.backbone} + {seed.attention} attention, {NUM_CLASSES} classes, "
        f"{IMAGE_SIZE}x{IMAGE_SIZE}, batch {seed.batch_size}, {seed.optimizer} lr {seed.lr} "
        f"wd {seed.weight_decay}; "
        f"{args.steps} timed steps x {args.repeats} repeats (median)"
    )

    specs = args.threads.split(",")
    pairs = variants(args)
    children = []
    t0 = time.perf_counter()
    try:
        for spec in specs:  # one at a time: warm-ups do not overlap
            children.append(Child(spec, args))
            print(f"threads {threads_label(spec)}: subprocess {children[-1].read('READY ')}")
        print(f"built, compiled and warmed up in {time.perf_counter() - t0:.0f} s")
        rates = {(spec, i): [] for spec in specs for i in range(len(pairs))}
        for _ in range(args.repeats):
            for proc in children:  # interleaved
                for i in range(len(pairs)):
                    rates[proc.spec, i].append(proc.measure(i))
    finally:
        for proc in children:
            proc.close()

    median = {key: statistics.median(values) for key, values in rates.items()}
    base_key = None
    if "default" in specs and (False, 1) in pairs:
        base_key = ("default", pairs.index((False, 1)))
    print()
    print(f"{'threads':<20}{'jit':<5}{'spe':>4}{'img/s':>10}  {'vs run.py':>9}  runs (img/s)")
    for spec in specs:
        for i, (jit, spe) in enumerate(pairs):
            value = median[spec, i]
            versus = f"{value / median[base_key]:.2f}x" if base_key else "-"
            runs = ", ".join(f"{r:.1f}" for r in rates[spec, i])
            jit_text = "on" if jit else "off"
            print(
                f"{threads_label(spec):<20}{jit_text:<5}{spe:>4}{value:10.1f}  {versus:>9}  {runs}"
            )
    if base_key is None:
        print("(vs run.py: not measured; needs threads default, jit off, spe 1)")
    print()
    spec, i = max(median, key=median.get)
    jit, spe = pairs[i]
    print(
        f"fastest: threads {threads_label(spec)}, jit_compile {'on' if jit else 'off'}, "
        f"steps_per_execution {spe}: {median[spec, i]:.1f} img/s"
    )


if __name__ == "__main__":
    main()
