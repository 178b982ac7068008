"""Recomputes finished image runs' `final_focus.json` with this checkout and compares.

    python benchmarks/final_focus_recompute.py RUN_DIR [RUN_DIR ...]

For a change to the focus checks that should not change their results: each RUN_DIR
must hold `config.json`, `best.keras` and the `final_focus.json` an older checkout
wrote. The focus images are the study's (`focus_set` of the run's data), as many as the
old file measured (its `focus_images`). Prints each run's time and the
largest absolute difference over the file's values (NaN equal to NaN); exits 1 when
any value differs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import keras

from keras_attn.experiments.image import ImageExperiment
from keras_attn.study.focus_final import final_focus, read_final_focus
from keras_attn.study.image import StudyImages, focus_set


def _difference(a: float, b: float) -> float:
    return 0.0 if (math.isnan(a) and math.isnan(b)) else abs(a - b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    images, worst = StudyImages(), 0.0
    for run in args.runs:
        spec = ImageExperiment.from_dict(ImageExperiment.read_config(run / "config.json"))
        old = read_final_focus(run / "final_focus.json")
        start = time.perf_counter()
        model = keras.saving.load_model(run / "best.keras")
        chosen = focus_set(images.pool(spec), int(old["focus_images"]))
        new = final_focus(model, **chosen, seed=spec.seed)
        diff = max(_difference(new[key], old[key]) for key in old)
        worst = max(worst, diff)
        print(f"{run}: {time.perf_counter() - start:.1f} s, max |difference| {diff}", flush=True)
    return 1 if worst > 0 else 0


if __name__ == "__main__":
    sys.exit(main())
