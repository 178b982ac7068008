"""The image experiment: its spec, its data, its model, and how one run trains.

`ImageExperiment` declares every setting of an image run (the training ones come
from `TrainingSpec`); `train_image.py`, `python -m tuning image` and the image
study all build one and call `train` with it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras

from keras_attn.data.image_pipeline import AUGMENTATIONS
from keras_attn.data.images import SOURCES, Clutter, ImageData, default_image_size, load_image_data
from keras_attn.data.images import steps_per_epoch as image_steps_per_epoch
from keras_attn.data.images import test_dataset as image_test_dataset
from keras_attn.data.images import train_dataset as image_train_dataset
from keras_attn.data.images import val_dataset as image_val_dataset
from keras_attn.layers import attention_names
from keras_attn.models.backbones import BACKBONES, OFFLINE_IMAGENET
from keras_attn.models.image import build_image_model, check_image_model_choices
from keras_attn.spec import at_least, fraction, like, non_negative, open_fraction, setting
from keras_attn.training.config import TrainingSpec
from keras_attn.training.run import finished_run, run_training


def int_list(value: str) -> str | None:
    parts = value.split(",")
    if all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        return None
    return f"must be positive integers separated by commas (got {value!r})"


@dataclasses.dataclass(frozen=True)
class ImageExperiment(TrainingSpec):
    """Every setting of an image run. Sized so the default run finishes on 2 CPU cores
    in about ten minutes (README)."""

    # The original study: CIFAR-100, small DenseNet with a linear-attention head,
    # 100 epochs, batch 128, AdamW 3e-4, weight decay 1e-4, label smoothing 0.1, seed 42.
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
            # The DenseNet's step ran 0.90x as fast in bf16 as in float32 on a CPU with AMX,
            # where auto picks bf16 for image runs (benchmarks/RESULTS.md section 15).
            mixed_precision="off",
        ),
    }
    NAME_FIELDS = ("data", "backbone", "attention")
    RENAMED = {"synthetic_per_class": "train_per_class"}

    preset: str | None = setting(None, "a named set of defaults (flags given override it)")
    data: str = setting("synthetic", "data source", choices=SOURCES, group="data")
    data_dir: str | None = setting(
        None,
        "folder data: class-per-subfolder, optional train/ val/ test/; MNIST family: the "
        "folder with the four IDX files (default: the Keras cache, then Debian's package)",
        group="data",
    )
    image_size: int | None = setting(
        None, "side in pixels (default per data source)", check=at_least(8), group="data"
    )
    val_fraction: float = setting(
        0.2,
        "share of each class carved from the training set for validation (folders without "
        "val/, CIFAR, the MNIST family)",
        check=open_fraction,
        group="data",
    )
    train_per_class: int | None = setting(
        None,
        "keep N training images per class, the same N for every variant at a seed (val and "
        "test stay whole); synthetic: N generated, default 400",
        metavar="N",
        check=at_least(1),
        group="data",
        aliases=("--synthetic-per-class",),
    )
    canvas: int = setting(
        60, "cluttered MNIST family: canvas side", check=at_least(28), group="data"
    )
    distractors: int = setting(
        4, "cluttered MNIST family: distractor patches per image", check=non_negative, group="data"
    )
    distractor_size: int = setting(
        8, "cluttered MNIST family: distractor patch side", check=at_least(1), group="data"
    )
    download: bool = setting(
        False,
        "let Keras download MNIST / Fashion-MNIST when no local copy is found",
        group="data",
        in_config=False,
    )
    augment: str = setting(
        "auto",
        "training augmentation, each with a random left-right flip; auto: the source's own "
        "(resized_crop for folders, crop_pad otherwise)",
        choices=("auto", *AUGMENTATIONS),
        group="data",
    )
    backbone: str = setting("small_cnn", "the CNN", choices=BACKBONES, group="model")
    backbone_weights: str = setting(
        "auto",
        "the backbone's weights; auto: ImageNet for efficientnet_lite0 (offline), none "
        "(random) otherwise",
        metavar="auto|imagenet|none|PATH",
        group="model",
    )
    fine_tune: bool | None = setting(
        None, "train a pretrained backbone too (BatchNorm stays frozen)", group="model"
    )
    widths: str = setting(
        "32,64,128",
        "small_cnn, resnet_small: channels of each stage, comma-separated",
        check=int_list,
        metavar="W1,W2,...",
        group="model",
    )
    blocks: int = setting(
        1, "resnet_small: residual blocks per stage", check=at_least(1), group="model"
    )
    attention: str = setting("cbam", "attention block", choices=attention_names, group="model")
    reduction: int = setting(
        8, "channel attention reduction ratio", check=at_least(1), group="model"
    )
    kernel_size: int = setting(7, "spatial attention kernel size", check=at_least(1), group="model")
    dropout: float = setting(0.2, "dropout before the classifier", check=fraction, group="model")

    epochs: int = like(TrainingSpec, "epochs", 20)
    batch_size: int = like(TrainingSpec, "batch_size", 64)
    lr: float = like(TrainingSpec, "lr", 2e-3)
    weight_decay: float = like(TrainingSpec, "weight_decay", 5e-4)
    warmup_epochs: float = like(TrainingSpec, "warmup_epochs", 1.0)
    strategy: str = like(TrainingSpec, "strategy", "auto")

    def check(self) -> None:
        check_image_model_choices(self.backbone, self.attention, self.weights)

    @property
    def weights(self) -> str:
        """`backbone_weights` with `auto` resolved."""
        if self.backbone_weights != "auto":
            return self.backbone_weights
        return "imagenet" if self.backbone in OFFLINE_IMAGENET else "none"


def load_data(spec: ImageExperiment, split_seed: int | None = None) -> ImageData:
    """The spec's images; folder data without val/ is split by `split_seed` (default:
    the run's seed; the study fixes it so every seed validates on the same images)."""
    data = load_image_data(
        spec.data,
        spec.data_dir,
        spec.image_size,
        seed=spec.seed if split_seed is None else split_seed,
        val_fraction=spec.val_fraction,
        train_per_class=spec.train_per_class,
        clutter=Clutter(spec.canvas, spec.distractors, spec.distractor_size),
        allow_download=spec.download,
    )
    if spec.augment != "auto":
        data = dataclasses.replace(data, augment=spec.augment)
    print(data.summary_line(), flush=True)
    return data


def resolved(spec: ImageExperiment, data: ImageData | None = None) -> ImageExperiment:
    """The spec with what the data decided (the image size) and the backbone's weights
    resolved, as `config.json` records it; without `data`, the size the data will have."""
    if data is not None:
        size = data.image_size
    else:
        size = spec.image_size or default_image_size(spec.data, spec.canvas)
    return spec.replace(image_size=size, backbone_weights=spec.weights)


def build_model(spec: ImageExperiment, data: ImageData) -> keras.Model:
    """The classifier `images (B,S,S,3) -> logits (B, classes)`; call after seeding."""
    return classifier(spec, len(data.class_names), data.image_size)


def classifier(spec: ImageExperiment, num_classes: int, image_size: int) -> keras.Model:
    """The spec's classifier for `num_classes` at `image_size` (no data needed)."""
    return build_image_model(
        num_classes,
        image_size,
        backbone=spec.backbone,
        attention=spec.attention,
        weights=spec.weights,
        trainable_backbone=spec.fine_tune,
        dropout=spec.dropout,
        seed=spec.seed,
        attention_options=dict(reduction=spec.reduction, kernel_size=spec.kernel_size),
        widths=tuple(int(w) for w in spec.widths.split(",")),
        blocks=spec.blocks,
    )


def default_run_dir(spec: ImageExperiment) -> Path:
    return Path(spec.run_dir or Path("runs", "image", spec.run_name()))


def train(
    spec: ImageExperiment,
    data: ImageData | None = None,
    run_dir: str | Path | None = None,
    evaluate_test: bool = True,
    **trainer_options,
) -> dict:
    """Trains (or resumes, or reports) one image run; returns its summary.

    `data` defaults to `load_data(spec)`, loaded only when the run has something left to
    do; `run_dir` to `--run-dir`, else a name from the resolved config. With
    `evaluate_test` the best-val model is scored once on the test split at the end (a
    tuner's trials leave it off: they must not see test). `trainer_options` go to
    `run_training` (callbacks, a model built by the tuner).
    """
    run_dir = Path(run_dir) if run_dir else default_run_dir(resolved(spec, data))
    if data is None:
        done = finished_run(
            run_dir, resolved(spec), evaluate_test, trainer_options.get("until_epoch")
        )
        if done is not None:
            return done
        data = load_data(spec)
    spec = resolved(spec, data)
    return run_training(
        lambda: build_model(spec, data),
        lambda start, end: image_train_dataset(data, spec.batch_size, spec.seed, start, end),
        image_val_dataset(data, spec.batch_size),
        image_steps_per_epoch(data, spec.batch_size),
        spec,
        run_dir,
        summary_extra=dict(
            class_names=data.class_names,
            num_train=data.num_train,
            num_val=data.num_val,
            num_test=data.num_test,
            data_origin=data.origin,
            skipped_files=data.skipped_files,
        ),
        test_data=image_test_dataset(data, spec.batch_size) if evaluate_test else None,
        **trainer_options,
    )
