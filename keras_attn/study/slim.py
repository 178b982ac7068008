"""`python -m keras_attn.study slim FOLDER`: a finished study's runs made small enough to commit.

Every figure a report or a claim recomputes needs each test example's `label` and
`predicted` class (and `predicted_last`), not the float16 `probabilities` (N, classes)
that `test_predictions.npz` also keeps: dropping them takes a 10,000-image run's file from
about 200 KB to about 20 KB. The files are rewritten in place, compressed; a file
already slim, or not a readable archive, is left as it is and counted.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from keras_attn.errors import UserError

DROPPED = ("probabilities",)


def slim(folder: str | Path) -> dict:
    """Rewrites `FOLDER/runs/*/test_predictions.npz` without `DROPPED`; returns counts."""
    runs = Path(folder) / "runs"
    if not runs.is_dir():
        raise UserError(f"{runs}: no such folder (a study's runs)")
    counts = dict(slimmed=0, already=0, unreadable=0, saved_bytes=0)
    for path in sorted(runs.glob("*/test_predictions.npz")):
        try:
            with np.load(path) as saved:
                arrays = {k: saved[k] for k in saved.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            counts["unreadable"] += 1
            continue
        if not any(k in arrays for k in DROPPED):
            counts["already"] += 1
            continue
        before = path.stat().st_size
        kept = {k: v for k, v in arrays.items() if k not in DROPPED}
        partial = path.with_name("test_predictions.partial.npz")
        np.savez_compressed(partial, **kept)
        partial.replace(path)  # never a half-written file under the real name
        counts["slimmed"] += 1
        counts["saved_bytes"] += before - path.stat().st_size
    return counts
