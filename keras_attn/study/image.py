"""The image study: one attention variant per column, one seed per row, everything else equal.

For a given seed every variant sees the same data order and augmentation (both are
functions of seed and epoch) and starts with the same weights in the layers they
share (each layer's initializer is seeded from seed and layer name).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_attn.cli import train_config
from keras_attn.data.images import (
    ImageData,
    load_image_data,
    steps_per_epoch,
    train_dataset,
    val_dataset,
)
from keras_attn.experiments.image import (
    image_model_builder,
    image_run,
    image_summary,
)
from keras_attn.models.image import check_image_model_choices
from keras_attn.study.focus import ImageFocus
from keras_attn.training.run import run_training

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


def load_study_images(settings: dict) -> ImageData:
    data = load_image_data(
        settings["data"],
        settings["data_dir"],
        settings["image_size"],
        seed=SPLIT_SEED,
        val_fraction=settings["val_fraction"],
        train_per_class=settings["synthetic_per_class"],
    )
    print(data.summary_line())
    return data


def image_runner(settings: dict, data: ImageData, focus_images: int, focus_every: int):
    """`run_one(variant, seed, run_dir)` for the grid: one image run under `settings`."""
    focus = focus_set(data, focus_images)

    def run_one(variant: str, seed: int, run_dir: Path) -> dict:
        run_settings = {**settings, "attention": variant, "seed": seed}
        cfg = train_config(run_settings)
        config, _ = image_run(run_settings, data)
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
        return run_training(
            image_model_builder(run_settings, data),
            lambda start, end: train_dataset(data, cfg.batch_size, cfg.seed, start, end),
            val_dataset(data, cfg.batch_size),
            steps_per_epoch(data, cfg.batch_size),
            cfg,
            run_dir,
            config,
            summary_extra=image_summary(data),
            measure_callbacks=measures,
            progress_bar=False,
        )

    return run_one


def check_variants(variants: Sequence[str], settings: dict) -> None:
    for variant in variants:
        check_image_model_choices(settings["backbone"], variant, settings["backbone_weights"])
