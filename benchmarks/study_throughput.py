"""Runs per hour of the image study: one process against `--workers N`, and against an
older checkout, one after the other on the same machine.

    python benchmarks/study_throughput.py [--before DIR] [--workers 1,2] [--seeds 2]
        [--epochs 3] [--precisions off,bf16] [--out DIR] [-- STUDY_FLAGS...]

Each configuration runs `python -m keras_attn.study image --seeds S --epochs E
--out OUT/<name> [--workers N] STUDY_FLAGS` in a fresh output folder: from this checkout
(`after-w<N>` for each N of `--workers`, at each `--precisions` value: `after-w<N>-bf16`)
and, with `--before DIR`, once from that checkout (`before-w1`, at its default precision;
e.g. a `git worktree` of the commit before a change). The wall time is the
whole command's (data, every run, test scoring, the final focus checks, the report), as a
user waits for it. Runs per hour = completed runs / wall hours.

It then compares every run's results with the first configuration's of the same precision
(best and final val accuracy, best epoch, test accuracy): a speed-up that changes results
is not one. Another precision changes results by design; its accuracy parity is
`precision_parity.py`'s question.
Wall time depends on what else the machine runs: read the load averages printed beside
each line and compare configurations measured in the same invocation only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
COMPARED = ("best_val_accuracy", "final_val_accuracy", "best_epoch", "test_accuracy")


def run_study(checkout: Path, out: Path, flags: list[str]) -> float:
    """Runs one study to completion from `checkout`; returns its wall seconds."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "keras_attn.study", "image", "--out", str(out), *flags]
    start = time.perf_counter()
    subprocess.run(command, cwd=checkout, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="an older checkout to run once, 1 process")
    parser.add_argument("--workers", default="1,2", help="--workers values for this checkout")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--precisions", default="off", help="--mixed-precision values for this checkout"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/runs/study_throughput")
    parser.add_argument("study_flags", nargs="*", help="after --: passed to every study")
    args = parser.parse_args()

    flags = ["--seeds", str(args.seeds), "--epochs", str(args.epochs), *args.study_flags]
    configs = [("before-w1", args.before, 1, None)] if args.before else []
    for precision in args.precisions.split(","):
        tag = "" if precision == "off" else f"-{precision}"
        configs += [(f"after-w{n}{tag}", REPO, int(n), precision) for n in args.workers.split(",")]
    print(f"{cpu_model()}, {os.cpu_count()} cores; study image {' '.join(flags)}", flush=True)

    rows, results = [], {}
    for name, checkout, workers, precision in configs:
        extra = ["--workers", str(workers)] if workers > 1 else []
        extra += ["--mixed-precision", precision] if precision else []
        load = os.getloadavg()[0]
        wall = run_study(checkout, args.out / name, flags + extra)
        table = pd.read_csv(args.out / name / "results.csv")
        done = int((table["status"] == "completed").sum())
        results[name] = table.set_index(["variant", "seed"])[list(COMPARED)]
        rows.append(
            dict(
                config=name,
                precision=precision or "default",
                runs=done,
                wall_s=round(wall, 1),
                runs_per_hour=round(done / wall * 3600, 1),
                run_seconds_sum=round(float(table["wall_seconds"].sum()), 1),
                load_before=round(load, 2),
                load_after=round(os.getloadavg()[0], 2),
            )
        )
        print(rows[-1], flush=True)

    summary = pd.DataFrame(rows)
    summary["speedup"] = (summary["runs_per_hour"] / summary["runs_per_hour"].iloc[0]).round(2)
    # The before checkout ran at its default, float32 on a CPU: it pairs with `off`.
    same = summary["precision"].replace("default", "off")
    firsts = {p: summary["config"][same == p].iloc[0] for p in same.unique()}
    summary["max_result_diff"] = [
        float((results[name] - results[firsts[p]]).abs().to_numpy().max())
        for name, p in zip(summary["config"], same, strict=True)
    ]
    print(summary.to_string(index=False))
    summary.to_csv(args.out / "summary.csv", index=False)


if __name__ == "__main__":
    main()
