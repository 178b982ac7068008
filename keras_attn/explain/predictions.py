"""Top-k predictions: from logits to ranked classes, the console line and `predictions.csv`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from keras_attn.files import atomic_write_text

CSV_COLUMNS = ("input", "rank", "class_index", "class", "probability", "true_class")


def softmax(logits: np.ndarray) -> np.ndarray:
    """(..., K) logits -> (..., K) probabilities, in float64 (no overflow for large logits)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(K,) -> the min(k, K) most probable `(class index, probability)`, best first.

    Ties go to the lower class index, so the order never depends on the sort.
    """
    p = np.asarray(probabilities, np.float64).reshape(-1)
    order = np.lexsort((np.arange(len(p)), -p))[: max(0, int(k))]
    return [(int(i), float(p[i])) for i in order]


def describe(ranked: list[tuple[int, float]], class_names: list[str]) -> str:
    """`[(i, p), ...]` -> "circle 0.412, square 0.201" (the console line and figure titles)."""
    return ", ".join(f"{class_names[i]} {p:.3f}" for i, p in ranked)


def figure_names(inputs: list[str]) -> list[str]:
    """One PNG name per input: `<stem>.png`, then `<stem>-2.png`... for repeated stems.

    Two inputs from different folders may share a stem (a/x.jpg, b/x.png); neither
    figure may overwrite the other.
    """
    seen: dict[str, int] = {}
    taken = set()
    names = []
    for path in inputs:
        stem = Path(path).stem or "input"
        count = seen.get(stem, 0)
        name = f"{stem}.png" if count == 0 else f"{stem}-{count + 1}.png"
        while name in taken:  # an input literally named x-2 after two x's
            count += 1
            name = f"{stem}-{count + 1}.png"
        seen[stem] = count + 1
        taken.add(name)
        names.append(name)
    return names


def csv_rows(
    input_path: str,
    ranked: list[tuple[int, float]],
    class_names: list[str],
    true_class: str | None = None,
) -> list[dict]:
    """One row per ranked class (columns `CSV_COLUMNS`; `true_class` empty when unknown)."""
    return [
        {
            "input": input_path,
            "rank": rank,
            "class_index": index,
            "class": class_names[index],
            "probability": f"{probability:.6f}",
            "true_class": true_class or "",
        }
        for rank, (index, probability) in enumerate(ranked, start=1)
    ]


def write_csv(path: Path, rows: list[dict]) -> None:
    """Writes `rows` (header `CSV_COLUMNS`, also with no row) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
