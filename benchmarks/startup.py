"""Where the time of `python train_image.py --epochs 1` goes, and of re-running it when done.

    python benchmarks/startup.py [--out DIR] [-- TRAIN_IMAGE_FLAGS...]

Runs, one after the other, each in a fresh subprocess (flags after `--` go to every one):

1. `python -c pass` (the interpreter alone) and `python -X importtime -c "import tensorflow;
   import train_image"` (TensorFlow is imported first there because `_quiet_tensorflow`
   closes stderr, where -X importtime writes, while it imports TensorFlow itself): the
   import time of TensorFlow, of the optional packages it and Keras pull in when installed,
   and of train_image's own imports on top.
2. A timed run: `train_image.py --epochs 1 --run-dir DIR/timed` run by this script in a child
   process (`--child`) that imports `train_image`, wraps the functions each phase is made of
   (`load_data`, `run_training`, `compile_for_training`, `keras.Model.fit`, `evaluate_best`,
   and `finished_run` where it exists) to note when they start and end (wall and CPU time),
   adds one callback at the end of fit's list that notes the first and last train and
   validation batches, then calls `train_image.cli()` as `python train_image.py` does.
   Nothing in the package is changed.
3. The same child again on the finished run directory (a resume that has nothing to do).
4. The plain commands, `python train_image.py --epochs 1 --run-dir DIR/plain` and the same
   again, timed from outside only: the totals without this script's hooks.

Tracing is the first train (or validation) execution less one steady execution, the mean of
the others (Keras calls the batch callbacks once per execution of `steps_per_execution`
steps). The synthetic set is generated on first use (data/synthetic); run once beforehand so
that a measurement does not include it. Wall time depends on what else the machine runs:
compare ratios measured at the same time, and read the load average printed with them; the
CPU seconds of the single-threaded phases (imports, data, tracing) vary far less. A phase
with wall time but no CPU time is waiting (e.g. fit's return, the tf.data iterator's teardown).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Packages that TensorFlow or Keras import when they are installed; none is used by the
# default run. Their first-import times overlap (scipy inside sklearn...): not additive.
OPTIONAL = ("keras", "sklearn", "scipy", "jax", "IPython", "matplotlib", "pandas", "cv2", "h5py")


def child(args, flags: list[str]) -> None:
    """One train_image run in this process, every phase's start and end noted into
    `args.result` (JSON: phase marks as (time.time(), CPU seconds so far), batch counts)."""
    marks = {}

    def mark(name: str, first: bool = False) -> None:
        if not (first and name in marks):
            marks[name] = (time.time(), time.process_time())

    mark("child_start")
    sys.path.insert(0, str(REPO))
    import train_image  # noqa: I001  (what `python train_image.py` imports, then its parser)

    mark("imports_done")
    import keras

    from keras_attn.experiments import image
    from keras_attn.training import run

    def timed(module, name: str, phase: str) -> None:
        shipped = getattr(module, name)

        def wrapper(*a, **kw):
            mark(f"{phase}_start", first=True)
            try:
                return shipped(*a, **kw)
            finally:
                mark(f"{phase}_end")

        setattr(module, name, wrapper)

    # Each is looked up in the module named here at its call.
    timed(image, "load_data", "data")
    if hasattr(image, "finished_run"):  # the resume check that needs no data
        timed(image, "finished_run", "finished")
    timed(image, "run_training", "run_training")
    timed(run, "compile_for_training", "compile")
    timed(run, "evaluate_best", "evaluate")

    counts = {"train": 0, "val": 0}

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            mark("train_begin")

        def on_train_batch_begin(self, batch, logs=None):
            mark("train_batch_begin", first=True)

        def on_train_batch_end(self, batch, logs=None):
            counts["train"] += 1
            mark("train_first_end", first=True)
            mark("train_last_end")

        def on_test_begin(self, logs=None):
            mark("val_begin")

        def on_test_batch_end(self, batch, logs=None):
            counts["val"] += 1
            mark("val_first_end", first=True)
            mark("val_last_end")

        def on_test_end(self, logs=None):
            mark("val_end")

        def on_epoch_end(self, epoch, logs=None):
            mark("epoch_end")  # after every other callback's epoch end

        def on_train_end(self, logs=None):
            mark("train_end")

    shipped_fit = keras.Model.fit

    def fit(self, *a, callbacks=None, **kw):
        mark("fit_start")
        try:
            return shipped_fit(self, *a, callbacks=[*(callbacks or []), Clock()], **kw)
        finally:
            mark("fit_end")

    keras.Model.fit = fit
    sys.argv = ["train_image.py", *flags]
    try:
        train_image.cli()
    finally:
        mark("main_end")
        Path(args.result).write_text(json.dumps(dict(marks=marks, counts=counts)))


def run_timed(command: list[str], log: Path) -> tuple[float, float, float]:
    """Runs `command` from the repository root, output to `log`; returns its start and end
    (time.time()) and the CPU seconds (user + system, all threads) it used."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    start = time.time()
    with open(log, "w") as f:
        child = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
    end = time.time()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}); log {log}:\n{tail}")
    return start, end, usage.ru_utime + usage.ru_stime


def import_times(out: Path) -> tuple[tuple[float, float], dict[str, float]]:
    """The interpreter's start-up alone (wall and CPU s) and, from -X importtime, the
    cumulative first import time (s) of TensorFlow, of OPTIONAL and of train_image."""
    start, end, cpu = run_timed([sys.executable, "-c", "pass"], out / "python.log")
    log = out / "importtime.log"
    code = "import tensorflow; import sys; sys.path.insert(0, '.'); import train_image"
    run_timed([sys.executable, "-X", "importtime", "-c", code], log)
    found: dict[str, float] = {}
    for line in log.read_text().splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        name = name.strip()
        if name in ("tensorflow", "train_image", *OPTIONAL) and name not in found:
            found[name] = int(cumulative) / 1e6
    return (end - start, cpu), found


def tracing(marks: dict, first_end: str, count: int, begin: str):
    """((wall, CPU) of tracing, (label, wall, CPU) of the executions) of the train or val
    executions from `begin` to `first_end`'s last: tracing is the first execution less a
    steady one, the mean of the others."""
    last_end = first_end.replace("first", "last")
    traced, steps, steady = [], [], []
    for i in (0, 1):  # wall, CPU
        first = marks[first_end][i] - marks[begin][i]
        steady.append((marks[last_end][i] - marks[first_end][i]) / max(count - 1, 1))
        traced.append(first - steady[i] if count > 1 else first)
        steps.append(marks[last_end][i] - marks[begin][i] - traced[i])
    kind = first_end.split("_")[0]
    label = f"{kind} steps ({count} executions, {steady[0] * 1e3:.0f} ms each)"
    return tuple(traced), (label, *steps)


# Each phase ends at a mark, in this order; a run notes only the marks it reaches (a resume
# that has nothing to do stops after run_training, or after finished_run where it exists).
PHASES = (
    ("child_start", "interpreter start-up"),
    ("imports_done", "imports (train_image's)"),
    ("finished_start", "argument parsing, run dir"),
    ("finished_end", "resume check without data (finished_run)"),
    ("data_start", "argument parsing, run dir"),
    ("data_end", "data (load_data)"),
    ("run_training_start", "val/test pipelines"),
    ("compile_start", "run dir check"),
    ("compile_end", "model build + compile"),
    ("fit_start", "datasets, callbacks"),
    ("train_batch_begin", "fit: start to first batch"),
    ("train_last_end", "train steps"),  # split into tracing and steps below
    ("val_begin", "train end to validation"),
    ("val_last_end", "val steps"),  # likewise
    ("epoch_end", "epoch end (callbacks: checkpoint...)"),
    ("train_end", "train end (callbacks)"),
    ("fit_end", "fit returns (iterator teardown)"),
    ("evaluate_start", "summary"),
    ("evaluate_end", "test evaluation (evaluate_best)"),
    ("run_training_end", "run_training (the rest; a resume: reports)"),
    ("main_end", "print, main returns"),
    ("exit", "interpreter exit"),
)


def phases(marks: dict, counts: dict) -> list[tuple[str, float, float]]:
    """(phase, wall s, CPU s) of one child run, in order; they add up to its totals.
    `marks`: name -> (time.time(), CPU seconds so far), with the parent's `spawn` and
    `exit` added."""
    rows, previous = [], "spawn"
    for mark, name in PHASES:
        if mark not in marks:
            continue
        if mark == "train_last_end":
            tracing_row, steps = tracing(marks, "train_first_end", counts["train"], previous)
            rows += [("train step tracing", *tracing_row), steps]
        elif mark == "val_last_end":
            tracing_row, steps = tracing(marks, "val_first_end", counts["val"], previous)
            rows += [("val step tracing", *tracing_row), steps]
        else:
            rows.append((name, *(marks[mark][i] - marks[previous][i] for i in (0, 1))))
        previous = mark
    return rows


def show(title: str, rows: list[tuple[str, float, float]]) -> None:
    wall = sum(r[1] for r in rows)
    cpu = sum(r[2] for r in rows)
    print(f"{title}: {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"  {'phase':<44} {'wall':>9} {'':>6} {'CPU':>9}")
    for name, seconds, cpu_seconds in rows:
        print(f"  {name:<44} {seconds:7.2f} s {100 * seconds / wall:5.1f}% {cpu_seconds:7.2f} s")


def main() -> None:
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="keep the run directories and logs here (default: temp)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args, flags)
        return
    if "--run-dir" in flags or "--epochs" in flags:
        parser.error("--run-dir and --epochs are set by this script")

    out = Path(args.out or tempfile.mkdtemp(prefix="startup_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("timed", "plain"):
        if (out / name).exists():  # a finished run would only be reported
            parser.error(f"{out / name} exists; choose another --out")
    try:
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"machine: os.cpu_count()={os.cpu_count()}, {platform.machine()}, Python "
            f"{platform.python_version()}; load average {load}; {date}"
        )
        command = ["train_image.py", "--epochs", "1", *flags]
        print(f"command: python {' '.join(command)} --run-dir DIR")

        python, imports = import_times(out)
        print(
            f"imports (-X importtime, cumulative, first import): python -c pass {python[0]:.2f} s "
            f"({python[1]:.2f} s CPU); "
            f"tensorflow {imports['tensorflow']:.2f} s, of which "
            + ", ".join(f"{k} {v:.2f}" for k, v in imports.items() if k in OPTIONAL)
            + f"; then train_image {imports['train_image']:.2f} s"
        )

        totals = {}
        for label, name in (("timed run", "first"), ("resume of the finished run", "resume")):
            result = out / f"{name}.json"
            me = [sys.executable, __file__, "--child", "--result", str(result), "--"]
            spawn, exit_, cpu = run_timed(
                [*me, *command[1:], "--run-dir", str(out / "timed")], out / f"{name}.log"
            )
            found = json.loads(result.read_text())
            marks = {**found["marks"], "spawn": (spawn, 0.0), "exit": (exit_, cpu)}
            totals[name] = (exit_ - spawn, cpu)
            show(label, phases(marks, found["counts"]))

        plain = [sys.executable, *command, "--run-dir", str(out / "plain")]
        first = run_timed(plain, out / "plain.log")
        again = run_timed(plain, out / "plain_again.log")
        if "already complete" not in (out / "plain_again.log").read_text():
            raise SystemExit(f"the second plain run did not say 'already complete': {out}")
        plain_first, plain_again = first[1] - first[0], again[1] - again[0]
        print(
            f"plain command (no hooks): run {plain_first:.2f} s wall / {first[2]:.2f} s CPU, "
            f"resume {plain_again:.2f} s wall / {again[2]:.2f} s CPU "
            f"({again[2] / first[2]:.0%} of the run's CPU); hooked: run "
            f"{totals['first'][0]:.2f} s / {totals['first'][1]:.2f} s CPU, resume "
            f"{totals['resume'][0]:.2f} s / {totals['resume'][1]:.2f} s CPU"
        )
        print(f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
