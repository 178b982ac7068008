"""The image study: one attention variant per column, one seed per row, everything else equal.

For a given seed every variant sees the same data order and augmentation (both are
functions of seed and epoch) and starts with the same weights in the layers they
share (each layer's initializer is seeded from seed and layer name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_attn.data.images import ImageData
from keras_attn.experiments import image as image_experiment
from keras_attn.experiments.image import ImageExperiment
from keras_attn.study.focus import ImageFocus

# Split off for the folder data without val/; fixed so every seed validates on the same images.
SPLIT_SEED = 0


def focus_set(data: ImageData, count: int) -> dict | None:
    """A fixed set of validation images with target boxes, the same classes in turn
    (None when the data has no boxes, i.e. anything but the synthetic set)."""
    if data.val_boxes is None or data.val_images is None or count <= 0:
        return None
    labels = data.val_labels
    per_class = [np.flatnonzero(labels == c) for c in range(data.num_classes)]
    chosen = [idx[i] for i in range(max(map(len, per_class))) for idx in per_class if i < len(idx)]
    chosen = np.asarray(chosen[:count])
    return dict(images=data.val_images[chosen], labels=labels[chosen], boxes=data.val_boxes[chosen])


def load_study_images(spec: ImageExperiment) -> ImageData:
    return image_experiment.load_data(spec, split_seed=SPLIT_SEED)


def image_runner(base: ImageExperiment, data: ImageData, focus_images: int, focus_every: int):
    """`run_one(variant, seed, run_dir)` for the grid: one image run of `base` with that
    attention and seed."""
    focus = focus_set(data, focus_images)

    def run_one(variant: str, seed: int, run_dir: Path) -> dict:
        measures = []
        if focus is not None:
            measures.append(
                ImageFocus(
                    **focus,
                    log_dir=run_dir / "logs",
                    image_every=focus_every,
                    png_path=run_dir / "focus.png",
                )
            )
        return image_experiment.train(
            base.replace(attention=variant, seed=seed),
            data,
            run_dir,
            measure_callbacks=measures,
            progress_bar=False,
        )

    return run_one
