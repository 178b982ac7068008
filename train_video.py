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
from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.wlasl import load_wlasl
from keras_attn.experiments.video import (
    DEFAULTS,
    add_video_flags,
    prepare_video_inputs,
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
    if settings["num_frames"] < 1:
        parser.error("--num-frames must be at least 1")

    data_dir = settings["data_dir"] or ensure_synthetic_videos(
        clips_per_class=settings["synthetic_clips_per_class"]
    )
    image_size = settings["image_size"] or (224 if settings["data_dir"] else 96)
    index = load_wlasl(
        data_dir, settings["val_split"], settings["limit_classes"] or None, settings["class_order"]
    )
    print(index.summary_line())
    if settings["frame_range"] == "clip":
        index = index.over_whole_clips()
    inputs = prepare_video_inputs(
        index,
        settings["num_frames"],
        settings["sampling"],
        image_size,
        settings["backbone"],
        settings["backbone_weights"],
        feature_maps=settings["frame_attention"] != "none",
        crop_bbox=settings["crop_bbox"],
        feature_cache=settings["feature_cache"] == "on",
        cache_dir=settings["cache_dir"],
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )

    config, name = video_run(settings, data_dir, image_size)
    run_dir = settings["run_dir"] or os.path.join("runs", "video", name)
    run_training(
        video_model_builder(settings, inputs, len(index.class_names)),
        inputs.train,
        inputs.val,
        inputs.steps_per_epoch,
        cfg,
        run_dir,
        config,
        summary_extra=dict(class_names=index.class_names, **inputs.summary),
        overwrite=settings["overwrite"],
    )
    print(f"Run directory: {run_dir}  (tensorboard --logdir {run_dir})")


if __name__ == "__main__":
    main_guard(main)
