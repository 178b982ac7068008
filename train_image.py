"""Train an image classifier with or without attention, in a run directory.

    python train_image.py                          # embedded synthetic data, CBAM in a small CNN
    python train_image.py --attention none         # the baseline, everything else identical
    python train_image.py --data folder --data-dir data/images --attention cbam
    python train_image.py --data cifar100 --preset seed   # the original study's settings

Re-running the same command resumes an interrupted run (or reports a finished one).
"""

import os

from keras_attn.cli import (
    Parser,
    add_training_flags,
    main_guard,
    resolve,
    run_name,
    show_defaults,
    train_config,
)
from keras_attn.data.images import load_image_data, steps_per_epoch, train_dataset, val_dataset
from keras_attn.layers import attention_names
from keras_attn.models.backbones import BACKBONES
from keras_attn.models.image import build_image_model, check_image_model_choices
from keras_attn.training.run import run_training

# Defaults: sized so the default run finishes on 2 CPU cores in about ten minutes (README).
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

parser = Parser(
    description=__doc__.split("\n\n")[0],
    epilog="Flags left out take the preset's value, then the default.",
)
parser.add_argument("--preset", choices=sorted(PRESETS), help="a named set of defaults")
data_flags = parser.add_argument_group("data")
data_flags.add_argument("--data", choices=("synthetic", "folder", "cifar10", "cifar100"))
data_flags.add_argument("--data-dir", help="folder data: class-per-subfolder, optional train/ val/")
data_flags.add_argument("--image-size", type=int, help="side in pixels (default per data source)")
data_flags.add_argument("--val-fraction", type=float, help="folder without val/: held-out share")
data_flags.add_argument("--synthetic-per-class", type=int, help="synthetic train images per class")
model_flags = parser.add_argument_group("model")
model_flags.add_argument("--backbone", choices=BACKBONES)
model_flags.add_argument("--backbone-weights", metavar="imagenet|none|PATH")
model_flags.add_argument(
    "--fine-tune",
    action="store_true",
    default=None,
    help="train a pretrained backbone too (BatchNorm stays frozen)",
)
model_flags.add_argument("--attention", metavar="|".join(attention_names()))
model_flags.add_argument("--reduction", type=int, help="channel attention reduction ratio")
model_flags.add_argument("--kernel-size", type=int, help="spatial attention kernel size")
model_flags.add_argument("--dropout", type=float, help="before the classifier")
add_training_flags(parser)
show_defaults(parser, DEFAULTS)


def main():
    args = parser.parse_args()
    settings = resolve(args, PRESETS.get(args.preset, {}), DEFAULTS)
    cfg = train_config(settings)
    check_image_model_choices(
        settings["backbone"], settings["attention"], settings["backbone_weights"]
    )

    data = load_image_data(
        settings["data"],
        settings["data_dir"],
        settings["image_size"],
        seed=cfg.seed,
        val_fraction=settings["val_fraction"],
        train_per_class=settings["synthetic_per_class"],
    )
    print(
        f"{data.source}: {len(data.class_names)} classes, {len(data.train_labels)} train / "
        f"{len(data.val_labels)} val images at {data.image_size}x{data.image_size}, "
        f"{len(data.skipped_files)} unreadable files skipped"
    )

    config = {k: v for k, v in settings.items() if k not in ("run_dir", "overwrite")}
    config["image_size"] = data.image_size
    name = f"{settings['data']}-{settings['backbone']}-{settings['attention']}-seed{cfg.seed}"
    run_dir = settings["run_dir"] or os.path.join("runs", "image", run_name(name, config))

    def build_model():
        return build_image_model(
            len(data.class_names),
            data.image_size,
            backbone=settings["backbone"],
            attention=settings["attention"],
            weights=settings["backbone_weights"],
            trainable_backbone=settings["fine_tune"],
            dropout=settings["dropout"],
            seed=cfg.seed,
            attention_options=dict(
                reduction=settings["reduction"], kernel_size=settings["kernel_size"]
            ),
        )

    run_training(
        build_model,
        lambda start, end: train_dataset(data, cfg.batch_size, cfg.seed, start, end),
        val_dataset(data, cfg.batch_size),
        steps_per_epoch(data, cfg.batch_size),
        cfg,
        run_dir,
        config,
        summary_extra=dict(
            class_names=data.class_names,
            num_train=len(data.train_labels),
            num_val=len(data.val_labels),
            skipped_files=data.skipped_files,
        ),
        overwrite=settings["overwrite"],
    )
    print(f"Run directory: {run_dir}  (tensorboard --logdir {run_dir})")


if __name__ == "__main__":
    main_guard(main)
