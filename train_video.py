"""Train a sign classifier on video clips: frozen MobileNet per frame, temporal head on top.

    python train_video.py                          # embedded synthetic sign clips
    python train_video.py --data-dir data/WLASL    # a WLASL download (either index format)
    python train_video.py --temporal avg           # the baseline without temporal attention
    python train_video.py --data-dir data/WLASL --index nslt_100.json --limit-classes 0
    python train_video.py --data-dir data/WLASL --preset seed   # the original study's settings
    python train_video.py --data-dir data/WLASL --split signer-independent
    python train_video.py --config runs/video/<run>/config.json   # repeat a run

Frozen features are cached under data/cache/features, so only the first epoch of
the first run decodes video. Re-running the same command resumes an interrupted run.
"""

import argparse
import sys

from keras_attn.cli import Parser, main_guard, spec_from_args
from keras_attn.experiments import video
from keras_attn.experiments.video import VideoExperiment


def make_parser(preset: str | None = None) -> Parser:
    """The flags; with a known `preset`, `--help` shows its values as the defaults."""
    parser = Parser(
        description=__doc__.split("\n\n")[0],
        epilog="Flags left out take --config's value, then the preset's, then the default.",
    )
    VideoExperiment.add_flags(parser, defaults=VideoExperiment.PRESETS.get(preset))
    return parser


parser = make_parser()


def _preset_in(argv) -> str | None:
    # Read before the real parse, so that `--preset seed --help` shows the preset's values.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(VideoExperiment.PRESETS))
    known, _ = pre.parse_known_args(argv)
    return known.preset


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    spec = spec_from_args(VideoExperiment, make_parser(_preset_in(argv)).parse_args(argv))
    data = video.load_video_data(spec)
    run_dir = video.default_run_dir(video.resolved(spec, data))
    video.train(spec, data, run_dir)
    print(f"Run directory: {run_dir}  (tensorboard --logdir {run_dir})")


def cli():
    main_guard(main, prog="train_video.py")


if __name__ == "__main__":
    cli()
