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
    show_defaults,
    train_config,
)
from keras_attn.data.images import load_image_data, steps_per_epoch, train_dataset, val_dataset
from keras_attn.experiments.image import (
    DEFAULTS,
    PRESETS,
    add_image_flags,
    image_model_builder,
    image_run,
    image_summary,
)
from keras_attn.models.image import check_image_model_choices
from keras_attn.training.run import run_training

parser = Parser(
    description=__doc__.split("\n\n")[0],
    epilog="Flags left out take the preset's value, then the default.",
)
add_image_flags(parser)
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
    print(data.summary_line())

    config, name = image_run(settings, data)
    run_dir = settings["run_dir"] or os.path.join("runs", "image", name)
    run_training(
        image_model_builder(settings, data),
        lambda start, end: train_dataset(data, cfg.batch_size, cfg.seed, start, end),
        val_dataset(data, cfg.batch_size),
        steps_per_epoch(data, cfg.batch_size),
        cfg,
        run_dir,
        config,
        summary_extra=image_summary(data),
        overwrite=settings["overwrite"],
    )
    print(f"Run directory: {run_dir}  (tensorboard --logdir {run_dir})")


if __name__ == "__main__":
    main_guard(main)
