"""Peak memory of a study grid in one process, with and without `free_memory` between runs.

    python benchmarks/study_memory.py [--attention none,cbam] [--seeds 15] [--epochs 1]
        [--image-size 16] [--synthetic-per-class 5] [--batch-size 8] [--out DIR]

`keras_attn.study.grid.run_grid` calls `free_memory()` (`keras.backend.clear_session()`,
`gc.collect()`) after each run, as Keras Tuner does between trials. This runs the same
image study twice, each time in its own fresh subprocess of this script: once as shipped,
once with `keras_attn.study.grid.free_memory` replaced by a no-op. Each subprocess runs
`python -m keras_attn.study image --attention A,B --seeds N ...` through the study's own
`main()` (so its data, grid, runner, run directories and report are the study's), with tiny
settings by default: 2 variants x 15 seeds = 30 runs of 1 epoch on the synthetic set at
16 px, 5 training images per class, batch 8, into its own folder under `--out` (default: a
temporary folder, removed at the end); the synthetic set is generated once beforehand, in
that folder, so neither subprocess pays for it.

A hook wraps the `run_one` the study passes to `run_grid` and reads VmRSS from
/proc/self/status when each run returns (before the grid's `free_memory` for that run).
Printed per subprocess: the peak RSS of the grid (`resource.getrusage(RUSAGE_SELF)
.ru_maxrss`, read when `run_grid` returns, KiB -> MiB), RSS after runs 1, 10, 20 and 30 (and
the last), RSS when the grid is done, the grid's wall time and the subprocess's (imports,
data and the study's report included); then peak(without) / peak(with).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKPOINTS = (1, 10, 20, 30)
MODES = ("with", "without")


def rss_mib() -> float:
    """The process's resident set size now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def study_args(args, out: Path, data_dir: Path) -> list[str]:
    return [
        "image",
        "--attention",
        args.attention,
        "--seeds",
        str(args.seeds),
        "--epochs",
        str(args.epochs),
        "--image-size",
        str(args.image_size),
        "--synthetic-per-class",
        str(args.synthetic_per_class),
        "--batch-size",
        str(args.batch_size),
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
    ]


def child(args) -> None:
    """One study in this process; writes its figures as JSON to `args.result`."""
    started = time.perf_counter()
    import keras_attn.study.__main__ as study_cli
    import keras_attn.study.grid as grid

    if args.child == "without":
        grid.free_memory = lambda: None  # run_grid looks it up at each call
    rss_after: list[float] = []
    figures: dict = {}
    shipped_run_grid = study_cli.run_grid

    def measured_run_grid(out, variants, seeds, run_one):
        def hooked(variant, seed, run_dir):
            try:
                return run_one(variant, seed, run_dir)
            finally:
                rss_after.append(rss_mib())

        grid_start = time.perf_counter()
        counts = shipped_run_grid(out, variants, seeds, hooked)
        figures.update(
            grid_seconds=time.perf_counter() - grid_start,
            peak_mib=peak_rss_mib(),
            rss_end_mib=rss_mib(),
            counts=counts,
        )
        return counts

    study_cli.run_grid = measured_run_grid
    out = Path(args.out) / args.child
    sys.argv = ["python -m keras_attn.study", *study_args(args, out, Path(args.out) / "data")]
    study_cli.main()
    figures.update(
        mode=args.child,
        rss_after_mib=rss_after,
        total_seconds=time.perf_counter() - started,
        command=" ".join(sys.argv),
    )
    Path(args.result).write_text(json.dumps(figures))


def run_child(mode: str, args, out: Path) -> dict:
    result = out / f"{mode}.json"
    log = out / f"{mode}.log"
    command = [sys.executable, __file__, "--child", mode, "--result", str(result)]
    command += ["--out", str(out), "--attention", args.attention, "--seeds", str(args.seeds)]
    command += ["--epochs", str(args.epochs), "--image-size", str(args.image_size)]
    command += ["--synthetic-per-class", str(args.synthetic_per_class)]
    command += ["--batch-size", str(args.batch_size)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with open(log, "w") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"free_memory {mode}: subprocess failed ({code}); log {log}:\n{tail}")
    return json.loads(result.read_text())


def show(figures: dict) -> None:
    rss = figures["rss_after_mib"]
    marks = [n for n in CHECKPOINTS if n <= len(rss)]
    if len(rss) not in marks:
        marks.append(len(rss))
    after = ", ".join(f"{n}: {rss[n - 1]:.0f}" for n in marks)
    counts = figures["counts"]
    print(
        f"free_memory {figures['mode']:<8} peak RSS {figures['peak_mib']:7.0f} MiB; RSS after "
        f"run {after} MiB; {figures['rss_end_mib']:.0f} MiB when the grid is done; "
        f"grid {figures['grid_seconds']:.0f} s, subprocess {figures['total_seconds']:.0f} s; "
        f"{counts['completed']} runs completed, {counts['failed']} failed"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attention", default="none,cbam", help="variants (none is added)")
    parser.add_argument("--seeds", type=int, default=15, help="seeds per variant")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--synthetic-per-class", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", help="keep the studies here (default: a temporary folder)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("seeds", "epochs", "synthetic_per_class", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.child:
        child(args)
        return

    out = Path(args.out or tempfile.mkdtemp(prefix="study_memory_"))
    out.mkdir(parents=True, exist_ok=True)
    for mode in MODES:
        if (out / mode).exists():  # a finished study would only be reported, not rerun
            parser.error(f"{out / mode} exists; choose another --out")
    try:
        from keras_attn.data.synthetic_images import ensure_synthetic_images

        # The study's synthetic set, generated once (load_image_data finds it complete).
        ensure_synthetic_images(
            root=out / "data",
            train_per_class=args.synthetic_per_class,
            image_size=args.image_size,
        )
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"machine: os.cpu_count()={os.cpu_count()}, {platform.machine()}, Python "
            f"{platform.python_version()}; load average {load}; {date}"
        )
        variants = [v for v in args.attention.split(",") if v]
        runs = len(dict.fromkeys(["none", *variants])) * args.seeds
        flags = " ".join(study_args(args, out / "<with|without>", out / "data"))
        print(
            f"study: python -m keras_attn.study {flags}  ({runs} runs per subprocess, one "
            "subprocess per setting, one after the other)"
        )
        results = {}
        for mode in MODES:
            results[mode] = run_child(mode, args, out)
            show(results[mode])
        ratio = results["without"]["peak_mib"] / results["with"]["peak_mib"]
        print(f"peak RSS without / with free_memory: {ratio:.2f}x")
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
