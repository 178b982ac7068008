"""Train a sign classifier on video clips: frozen MobileNet per frame, temporal head on top.

    python train_video.py                          # embedded synthetic sign clips
    python train_video.py --data-dir data/WLASL    # a WLASL download (either index format)
    python train_video.py --temporal avg           # the baseline without temporal attention

Frozen features are cached under data/cache/features, so only the first epoch of
the first run decodes video. Re-running the same command resumes an interrupted run.
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
from keras_attn.experiments.video import (
    DEFAULTS,
    add_video_flags,
    load_video_data,
    video_model_builder,
    video_run,
)
from keras_attn.training.run import run_training

parser = Parser(description=__doc__.split("\n\n")[0])
add_video_flags(parser)
add_training_flags(parser)
show_defaults(parser, DEFAULTS)


def main():
    args = parser.parse_args()
    settings = resolve(args, {}, DEFAULTS)
    cfg = train_config(settings)

    data = load_video_data(settings)

    config, name = video_run(settings, data.data_dir, data.image_size)
    run_dir = settings["run_dir"] or os.path.join("runs", "video", name)
    run_training(
        video_model_builder(settings, data.inputs, len(data.index.class_names)),
        data.inputs.train,
        data.inputs.val,
        data.inputs.steps_per_epoch,
        cfg,
        run_dir,
        config,
        summary_extra=dict(class_names=data.index.class_names, **data.inputs.summary),
        overwrite=settings["overwrite"],
    )
    print(f"Run directory: {run_dir}  (tensorboard --logdir {run_dir})")


if __name__ == "__main__":
    main_guard(main)
