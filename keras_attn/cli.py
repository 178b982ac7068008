"""What the training CLIs share: flags for a TrainConfig, error handling, run names."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable

from keras_attn.errors import UserError
from keras_attn.training.config import LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig
from keras_attn.training.distribute import STRATEGIES


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (exit 2), without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """Optimisation flags; defaults of None are filled from the preset, then TrainConfig."""
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="epochs to train")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--weight-decay", type=float, help="decoupled; not on biases or norms")
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--schedule", choices=SCHEDULES)
    g.add_argument("--warmup-epochs", type=float, help="linear warmup before the cosine decay")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--loss", choices=LOSSES)
    g.add_argument("--seed", type=int, help="data order, augmentation and initial weights")
    g.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="turn on TensorFlow op determinism (slower)",
    )
    g.add_argument(
        "--early-stopping",
        type=int,
        metavar="N",
        help="stop after N epochs without a better val accuracy (0: off)",
    )
    g.add_argument(
        "--strategy", choices=STRATEGIES, help="mirrored: data-parallel over this machine's GPUs"
    )
    g.add_argument(
        "--steps-per-execution",
        type=int,
        metavar="N",
        help="training steps per call into TensorFlow (less Python overhead per step)",
    )
    g.add_argument(
        "--mixed-precision",
        choices=("auto", "on", "off"),
        help="float16 compute, float32 weights; auto: on with a GPU",
    )
    g.add_argument("--jit-compile", choices=("auto", "on", "off"), help="XLA; auto: on with a GPU")
    g.add_argument("--run-dir", help="where the run's files go (default: runs/<kind>/<name>)")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run directory instead of resuming it",
    )


def show_defaults(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """Appends each flag's default to its help (the flags themselves default to None)."""
    for action in parser._actions:
        value = defaults.get(action.dest)
        if value is not None and action.help is not argparse.SUPPRESS:
            action.help = f"{action.help or ''} (default: {value})".strip()


def resolve(args: argparse.Namespace, preset: dict, defaults: dict) -> dict:
    """Each setting from the command line, else the preset, else the script's default."""
    resolved = {}
    for key, value in vars(args).items():
        if value is None:
            value = preset.get(key, defaults.get(key))
        resolved[key] = value
    return resolved


def train_config(settings: dict) -> TrainConfig:
    """The TrainConfig part of resolved settings; a bad value is a one-line error."""
    fields = {k: settings[k] for k in TrainConfig.field_names() if settings.get(k) is not None}
    cfg = TrainConfig(**fields)
    try:
        cfg.validate()
    except ValueError as err:
        raise UserError(str(err)) from None
    return cfg


def run_name(prefix: str, config: dict) -> str:
    """A readable name plus a hash of the whole config: the same command resumes the same run."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return f"{prefix}-{digest[:6]}"


def main_guard(main: Callable[[], None], prog: str | None = None) -> None:
    """Runs a CLI's main: user errors and divergence are one line, never a traceback."""
    from keras_attn.training.run import TrainingDiverged

    prog = prog or os.path.basename(sys.argv[0])
    try:
        main()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
