"""float32 against bfloat16 for the default image (or video) run: accuracy and training time,
seed by seed.

    python benchmarks/precision_parity.py [--script train_image.py|train_video.py] [--seeds 3]
        [--precisions off,bf16] [--out benchmarks/runs/precision_parity] [-- EXTRA FLAGS]

Runs `python SCRIPT --seed S --mixed-precision P --run-dir OUT/P-seedS` for every
seed and precision, interleaved (seed 0 float32, seed 0 bf16, seed 1 float32, ...) so that
a drift in the machine's speed falls on both precisions alike. A finished run directory is
resumed by its script (nothing retrained), so the benchmark can be stopped and rerun. A
video run's wall time holds the frame encoding of the first run in each precision (its
features are cached per precision, so later seeds reuse them); its steady time is the head's.

Per run it prints the best val accuracy, the test accuracy at the best-val epoch, the wall
time of the run and its steady training time (the sum of `epoch_seconds` of epochs 2..E in
history.csv: the first epoch holds the tracing). Then, per precision, the mean and the
seed-to-seed range, and per seed the time ratio float32 / bf16 (the speed-up), with their
median. "Inside the seed spread" means: the bf16 mean lies within the float32 runs'
[min, max] (and the other way round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd

from keras_attn.experiments.image import ImageExperiment
from keras_attn.experiments.video import VideoExperiment

ROOT = Path(__file__).resolve().parents[1]
SPECS = {"train_image.py": ImageExperiment, "train_video.py": VideoExperiment}


def run(script: str, seed: int, precision: str, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"{precision}-seed{seed}"
    command = [sys.executable, str(ROOT / script), "--seed", str(seed)]
    command += ["--mixed-precision", precision, "--run-dir", str(run_dir), *extra]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    history = pd.read_csv(run_dir / "history.csv")
    spec = SPECS[script].from_dict(json.loads((run_dir / "config.json").read_text()))
    return {
        "seed": seed,
        "precision": spec.mixed_precision,
        "best_val_accuracy": summary["best_val_accuracy"],
        "test_accuracy": summary.get("test_accuracy"),
        "best_epoch": summary.get("best_epoch"),
        "wall_seconds": summary["wall_seconds"],
        "steady_seconds": float(history["epoch_seconds"].iloc[1:].sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--script", choices=sorted(SPECS), default="train_image.py")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--precisions", default="off,bf16")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/runs/precision_parity")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    precisions = args.precisions.split(",")
    print(f"machine: os.cpu_count()={os.cpu_count()}; load average {os.getloadavg()}")
    rows = [run(args.script, s, p, args.out, extra) for s in range(args.seeds) for p in precisions]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    table.to_csv(args.out / "runs.csv", index=False)

    base, other = precisions[0], precisions[1]
    by = {p: table.iloc[i :: len(precisions)] for i, p in enumerate(precisions)}
    for metric in ("best_val_accuracy", "test_accuracy"):
        for p in precisions:
            v = by[p][metric]
            print(f"{metric} {p}: mean {v.mean():.4f}, range [{v.min():.4f}, {v.max():.4f}]")
        a, b = by[base][metric], by[other][metric]
        inside = a.min() <= b.mean() <= a.max() and b.min() <= a.mean() <= b.max()
        print(f"{metric}: {other} inside the {base} seed spread and back: {inside}")
    for column in ("wall_seconds", "steady_seconds"):
        ratios = [x / y for x, y in zip(by[base][column], by[other][column], strict=True)]
        shown = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"{column} {base}/{other} per seed: {shown}; median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
