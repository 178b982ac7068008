"""Train an image classifier with or without attention, in a run directory.

    python train_image.py                          # embedded synthetic data, CBAM in a small CNN
    python train_image.py --attention none         # the baseline, everything else identical
    python train_image.py --data folder --data-dir data/images --attention cbam
    python train_image.py --data cifar100 --preset seed   # the original study's settings
    python train_image.py --config runs/image/<run>/config.json   # repeat a run

Re-running the same command resumes an interrupted run (or reports a finished one).
"""

from keras_attn.cli import Parser, main_guard, spec_from_args
from keras_attn.experiments import image
from keras_attn.experiments.image import ImageExperiment

parser = Parser(
    description=__doc__.split("\n\n")[0],
    epilog="Flags left out take --config's value, then the preset's, then the default.",
)
ImageExperiment.add_flags(parser)


def main(argv=None):
    spec = spec_from_args(ImageExperiment, parser.parse_args(argv))
    run_dir = image.default_run_dir(image.resolved(spec))
    image.train(spec, run_dir=run_dir)  # loads the data unless the run is already complete
    print(f"Run directory: {run_dir}  (tensorboard --logdir {run_dir})")


def cli():
    main_guard(main, prog="train_image.py")


if __name__ == "__main__":
    cli()
