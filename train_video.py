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
    run_name,
    show_defaults,
    train_config,
)
from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.video import SAMPLING_MODES
from keras_attn.data.wlasl import load_wlasl
from keras_attn.experiments.video import prepare_video_inputs
from keras_attn.layers import temporal_names
from keras_attn.models.backbones import PRETRAINABLE
from keras_attn.models.video import FRAME_ATTENTION, build_video_head
from keras_attn.training.run import run_training

# The original study's video settings: 8 frames, 10 glosses, batch 4, AdamW 1e-3, 20 epochs.
DEFAULTS = dict(
    data_dir=None,
    synthetic_clips_per_class=100,
    val_split="test",
    limit_classes=10,
    class_order="frequency",
    num_frames=8,
    sampling="uniform",
    crop_bbox=False,
    image_size=None,
    backbone="mobilenet_v2",
    backbone_weights="auto",
    feature_cache="on",
    cache_dir=None,
    temporal="tcn",
    temporal_pool="attention",
    frame_attention="none",
    width=128,
    dropout=0.5,
    epochs=20,
    batch_size=4,
    optimizer="adamw",
    lr=1e-3,
    weight_decay=1e-4,
    schedule="cosine",
    warmup_epochs=0.0,
    label_smoothing=0.0,
    loss="crossentropy",
    seed=0,
    deterministic=False,
    early_stopping=0,
    strategy="auto",
)

parser = Parser(description=__doc__.split("\n\n")[0])
data_flags = parser.add_argument_group("data")
data_flags.add_argument(
    "--data-dir", help="WLASL folder: index file + videos/ (default: synthetic)"
)
data_flags.add_argument("--synthetic-clips-per-class", type=int, help="synthetic set size")
data_flags.add_argument("--val-split", choices=("val", "test"), help="validate on this split")
data_flags.add_argument("--limit-classes", type=int, metavar="N", help="keep N glosses (0: all)")
data_flags.add_argument("--class-order", choices=("frequency", "alphabetical"))
data_flags.add_argument("--num-frames", type=int, help="frames sampled per clip")
data_flags.add_argument("--sampling", choices=SAMPLING_MODES, help="where in the sign to sample")
data_flags.add_argument(
    "--crop-bbox", action="store_true", default=None, help="crop each frame to the signer's box"
)
data_flags.add_argument("--image-size", type=int, help="frame side (default 96 synthetic, 224)")
model_flags = parser.add_argument_group("model")
model_flags.add_argument("--backbone", choices=PRETRAINABLE, help="frozen frame encoder")
model_flags.add_argument("--backbone-weights", metavar="auto|imagenet|none|PATH")
model_flags.add_argument(
    "--feature-cache", choices=("on", "off"), help="off: run the frozen encoder on every batch"
)
model_flags.add_argument("--cache-dir", help="feature cache folder (default data/cache/features)")
model_flags.add_argument("--temporal", choices=temporal_names())
model_flags.add_argument(
    "--temporal-pool", choices=("attention", "avg", "max", "last"), help="how tcn pools frames"
)
model_flags.add_argument(
    "--frame-attention",
    choices=FRAME_ATTENTION,
    help="spatial attention on each frame's feature map",
)
model_flags.add_argument("--width", type=int, help="per-frame projection and TCN width")
model_flags.add_argument("--dropout", type=float)
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

    config = {k: v for k, v in settings.items() if k not in ("run_dir", "overwrite", "cache_dir")}
    config.update(data_dir=str(data_dir), image_size=image_size)
    name = f"{os.path.basename(str(data_dir))}-{settings['temporal']}-seed{cfg.seed}"
    run_dir = settings["run_dir"] or os.path.join("runs", "video", run_name(name, config))

    def build_model():
        head = build_video_head(
            inputs.feature_shape,
            settings["num_frames"],
            len(index.class_names),
            temporal=settings["temporal"],
            frame_attention=settings["frame_attention"],
            width=settings["width"],
            dropout=settings["dropout"],
            seed=cfg.seed,
            temporal_options=dict(filters=settings["width"], pool=settings["temporal_pool"]),
        )
        return inputs.wrap_head(head)

    run_training(
        build_model,
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
