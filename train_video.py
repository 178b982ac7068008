"""Train a sign classifier on video clips: frozen MobileNet per frame, temporal head on top.

    python train_video.py                          # embedded synthetic sign clips
    python train_video.py --data-dir data/WLASL    # a WLASL download (either index format)
    python train_video.py --temporal avg           # the baseline without temporal attention
    python train_video.py --config runs/video/<run>/config.json   # repeat a run

Frozen features are cached under data/cache/features, so only the first epoch of
the first run decodes video. Re-running the same command resumes an interrupted run.
"""

from keras_attn.cli import Parser, main_guard, spec_from_args
from keras_attn.experiments import video
from keras_attn.experiments.video import VideoExperiment

parser = Parser(
    description=__doc__.split("\n\n")[0],
    epilog="Flags left out take --config's value, then the default.",
)
VideoExperiment.add_flags(parser)


def main(argv=None):
    spec = spec_from_args(VideoExperiment, parser.parse_args(argv))
    data = video.load_video_data(spec)
    run_dir = video.default_run_dir(video.resolved(spec, data))
    video.train(spec, data, run_dir)
    print(f"Run directory: {run_dir}  (tensorboard --logdir {run_dir})")


def cli():
    main_guard(main, prog="train_video.py")


if __name__ == "__main__":
    cli()
