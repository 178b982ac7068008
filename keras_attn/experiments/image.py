"""The image experiment's settings and builders, shared by train_image.py and the study.

`DEFAULTS` and `PRESETS` are the settings a run resolves from; `add_image_flags`
declares the data and model flags; `image_run` names the run and its config;
`image_model_builder` returns the function `run_training` calls to build the model.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import keras

from keras_attn.cli import run_name
from keras_attn.data.images import ImageData
from keras_attn.layers import attention_names
from keras_attn.models.backbones import BACKBONES
from keras_attn.models.image import build_image_model

# Sized so the default run finishes on 2 CPU cores in about ten minutes (README).
DEFAULTS = dict(
    data="synthetic",
    backbone="small_cnn",
    attention="cbam",
    backbone_weights="none",
    image_size=None,
    val_fraction=0.2,
    dropout=0.2,
    reduction=8,
    kernel_size=7,
    synthetic_per_class=400,
    epochs=20,
    batch_size=64,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=5e-4,
    schedule="cosine",
    warmup_epochs=1.0,
    label_smoothing=0.1,
    loss="crossentropy",
    seed=0,
    deterministic=False,
    early_stopping=0,
    strategy="auto",
    steps_per_execution=1,
    mixed_precision="auto",
    jit_compile="auto",
)
# The original study: CIFAR-100, small DenseNet with a linear-attention head, 100 epochs,
# batch 128, AdamW 3e-4, weight decay 1e-4, label smoothing 0.1, cosine, seed 42.
PRESETS = {
    "seed": dict(
        backbone="densenet",
        attention="linear",
        image_size=32,
        epochs=100,
        batch_size=128,
        optimizer="adamw",
        lr=3e-4,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_epochs=0.0,
        label_smoothing=0.1,
        seed=42,
    ),
}
# Settings that say where a run goes or how to treat an old one, not what it computes.
NOT_IN_CONFIG = ("run_dir", "overwrite")


def add_image_flags(parser: argparse.ArgumentParser, variants: bool = False) -> None:
    """The data and model flags of an image run (each defaults to None: see `DEFAULTS`).

    With `variants`, `--attention` takes a comma-separated list (the study's grid).
    """
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named set of defaults")
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=("synthetic", "folder", "cifar10", "cifar100"))
    data.add_argument("--data-dir", help="folder data: class-per-subfolder, optional train/ val/")
    data.add_argument("--image-size", type=int, help="side in pixels (default per data source)")
    data.add_argument("--val-fraction", type=float, help="folder without val/: held-out share")
    data.add_argument("--synthetic-per-class", type=int, help="synthetic train images per class")
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=BACKBONES)
    model.add_argument("--backbone-weights", metavar="imagenet|none|PATH")
    model.add_argument(
        "--fine-tune",
        action="store_true",
        default=None,
        help="train a pretrained backbone too (BatchNorm stays frozen)",
    )
    model.add_argument(
        "--attention",
        metavar="|".join(attention_names()),
        help="comma-separated variants" if variants else None,
    )
    model.add_argument("--reduction", type=int, help="channel attention reduction ratio")
    model.add_argument("--kernel-size", type=int, help="spatial attention kernel size")
    model.add_argument("--dropout", type=float, help="before the classifier")


def image_run(settings: dict, data: ImageData) -> tuple[dict, str]:
    """The run's config (what `config.json` holds) and its default directory name."""
    config = {k: v for k, v in settings.items() if k not in NOT_IN_CONFIG}
    config["image_size"] = data.image_size
    prefix = f"{settings['data']}-{settings['backbone']}-{settings['attention']}"
    return config, run_name(f"{prefix}-seed{settings['seed']}", config)


def image_model_builder(settings: dict, data: ImageData) -> Callable[[], keras.Model]:
    """The function that builds the run's model (called by `run_training` after seeding)."""

    def build_model() -> keras.Model:
        return build_image_model(
            len(data.class_names),
            data.image_size,
            backbone=settings["backbone"],
            attention=settings["attention"],
            weights=settings["backbone_weights"],
            trainable_backbone=settings["fine_tune"],
            dropout=settings["dropout"],
            seed=settings["seed"],
            attention_options=dict(
                reduction=settings["reduction"], kernel_size=settings["kernel_size"]
            ),
        )

    return build_model


def image_summary(data: ImageData) -> dict:
    """What `summary.json` records about the data."""
    return dict(
        class_names=data.class_names,
        num_train=len(data.train_labels),
        num_val=len(data.val_labels),
        skipped_files=data.skipped_files,
    )
