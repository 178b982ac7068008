"""The image study: one attention variant per column, one seed per row, everything else equal.

For a given seed every variant sees the same training images (the seed's own draw), the
same data order and augmentation (functions of seed and epoch) and starts with the same
weights in the layers they share (each layer's initializer is seeded from seed and layer
name). Validation and test images are the same for every run.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from keras_attn.data.image_pipeline import as_model_images
from keras_attn.data.images import ImageData, keep_per_class
from keras_attn.experiments import image as image_experiment
from keras_attn.experiments.image import ImageExperiment
from keras_attn.study.focus import ImageFocus
from keras_attn.study.focus_final import final_focus, write_final_focus
from keras_attn.study.grid import (
    FINAL_FOCUS_FILE,
    Cell,
    free_memory,
    run_dir_for,
    variant_settings,
)

# Split off for the data without a val split; fixed so every seed validates on the same images.
SPLIT_SEED = 0
# What decides the images a run loads; the training draw then depends on the seed alone.
DATA_SETTINGS = ("data", "data_dir", "image_size", "val_fraction", "canvas", "distractors")
DATA_SETTINGS += ("distractor_size", "download", "augment")
SYNTHETIC_DEFAULT = 400  # the generator's own default, per class


def focus_set(data: ImageData, count: int) -> dict | None:
    """A fixed set of validation images with target boxes, the same classes in turn
    (None when the data has no boxes: the synthetic set and the cluttered MNIST family
    have them)."""
    if data.val_boxes is None or data.val_images is None or count <= 0:
        return None
    labels = data.val_labels
    per_class = [np.flatnonzero(labels == c) for c in range(data.num_classes)]
    chosen = [idx[i] for i in range(max(map(len, per_class))) for idx in per_class if i < len(idx)]
    chosen = np.asarray(chosen[:count])
    images = as_model_images(data.val_images[chosen], data.image_size)
    return dict(images=images, labels=labels[chosen], boxes=data.val_boxes[chosen])


class StudyImages:
    """The study's images: validation and test fixed, each seed's own training draw.

    Every run of a seed (any variant) trains on the same `train_per_class` images per
    class, drawn by that seed from a pool (`keep_per_class`, nested: a seed's 25 are the
    first 25 of its 100), so results do not hinge on one draw. The pool is the whole
    training split, or for the synthetic set twice the largest count asked for (its
    images are generated; this leaves every seed a draw of its own). Validation is split
    off by `SPLIT_SEED` and test is the source's own, the same for every run.
    """

    def __init__(self, axes: dict | None = None):
        self.largest = max((axes or {}).get("train_per_class", [0]))
        self._key, self._pool = None, None

    def pool(self, spec: ImageExperiment) -> ImageData:
        key = tuple(getattr(spec, name) for name in DATA_SETTINGS)
        if key != self._key:
            self._pool = None  # one pool in memory at a time
            count = 2 * self._largest(spec) if spec.data == "synthetic" else None
            self._pool = image_experiment.load_data(
                spec.replace(train_per_class=count), split_seed=SPLIT_SEED
            )
            self._key = key
        return self._pool

    def _largest(self, spec: ImageExperiment) -> int:
        return self.largest or spec.train_per_class or SYNTHETIC_DEFAULT

    def for_run(self, spec: ImageExperiment) -> ImageData:
        """The images of one run: the pool with this seed's training draw."""
        pool = self.pool(spec)
        count = spec.train_per_class or (SYNTHETIC_DEFAULT if spec.data == "synthetic" else None)
        return keep_per_class(pool, count, spec.seed) if count else pool

    def describe(self, spec: ImageExperiment) -> tuple[str, list[str]]:
        """The report's data line and the class names."""
        pool = self.pool(spec)
        line = pool.summary_line()
        if self.largest or spec.train_per_class or spec.data == "synthetic":
            count = "train-per-class" if self.largest else str(self._largest(spec))
            line += (
                f"; each seed trains on its own draw of {count} images per class from these "
                f"{pool.num_train} (val and test fixed)"
            )
        return line, pool.class_names


class ImageRunner:
    """The grid's `run_one(variant, seed, run_dir, **settings)` for images: one image run
    of `base` with that attention, seed and axis values; and, once the grid is done,
    `final_focus(...)`: the end-of-training focus measures of each reported run's
    best-val model (`final_focus.json`), so a learning-rate sweep measures only the runs
    at their variant's chosen rate. With `focus_each_run` (no rate is tuned, so every run
    is reported) each run measures itself as it finishes: in the worker that trained it,
    beside the other workers' training, instead of one after another once the grid is done."""

    def __init__(
        self,
        base: ImageExperiment,
        images: StudyImages,
        focus_images: int,
        focus_every: int,
        final_focus_images: int = 0,
        focus_each_run: bool = False,
    ):
        self.base, self.images = base, images
        self.focus_images, self.focus_every = focus_images, focus_every
        self.final_focus_images = final_focus_images
        self.focus_each_run = focus_each_run

    def spec(self, variant: str, seed: int, **settings) -> ImageExperiment:
        fixed = variant_settings(ImageExperiment, "attention", variant)
        return self.base.replace(**fixed, seed=seed, **settings)

    def __call__(self, variant: str, seed: int, run_dir: Path, **settings) -> dict:
        spec = self.spec(variant, seed, **settings)
        data = self.images.for_run(spec)
        focus = focus_set(data, self.focus_images)
        measures = []
        if focus is not None:
            measures.append(
                ImageFocus(
                    **focus,
                    log_dir=run_dir / "logs",
                    image_every=self.focus_every,
                    png_path=run_dir / "focus.png",
                )
            )
        summary = image_experiment.train(
            spec, data, run_dir, measure_callbacks=measures, progress_bar=False
        )
        if self.focus_each_run:  # train() raised if the run diverged: it completed
            self._final_focus_of(run_dir, spec, Cell(variant, seed, tuple(settings.items())).label)
        return summary

    def final_focus(self, out: Path, cells: list[Cell], runs: pd.DataFrame) -> int:
        """Writes `final_focus.json` for each cell whose run in `runs` (the grid's table,
        with a `selected` column) is selected and completed and has none yet; returns
        how many it wrote."""
        reported = runs["selected"] & (runs["status"] == "completed")
        reported = set(runs.loc[reported, "run_dir"])
        written = 0
        for cell in cells:
            run_dir = run_dir_for(out, *cell)
            if str(run_dir) in reported:
                spec = self.spec(cell.variant, cell.seed, **dict(cell.settings))
                written += self._final_focus_of(run_dir, spec, cell.label)
        return written

    def _final_focus_of(self, run_dir: Path, spec: ImageExperiment, label: str) -> bool:
        """Writes the run's `final_focus.json` unless it exists, the checks are off or the
        data has no boxes; returns whether it wrote one."""
        path = run_dir / FINAL_FOCUS_FILE
        if self.final_focus_images <= 0 or path.exists():
            return False
        # Validation is the same for every seed: the pool's, not the run's draw.
        final = focus_set(self.images.pool(spec), self.final_focus_images)
        if final is None:
            return False
        print(f"[study] final focus checks: {label}", flush=True)
        model = keras.saving.load_model(run_dir / "best.keras")
        write_final_focus(path, final_focus(model, **final, seed=spec.seed))
        free_memory()
        return True
