r"""## Hyperparameter search (Keras Tuner)

Search the hyperparameters of either experiment, the attention type included, and
compare the trials in TensorBoard's HParams dashboard:

    python -m tuning image --tuner hyperband --max-epochs 30
    python -m tuning video --tuner bayesian --max-trials 20
    python -m tuning image --attention cbam,none --fixed lr=1e-3 --max-trials 8
    python -m tuning video --show-space          # the space, after narrowing, and exit
    tensorboard --logdir runs/tuning

Tuners: `random`, `grid`, `bayesian` (`--max-trials`, `--epochs` per trial) and
`hyperband` (`--max-epochs`, `--factor`). The space holds the attention type and its
parameters, learning rate, weight decay, label smoothing and dropout; the video
search adds frames per clip, frame attention, the temporal module, pooling and TCN
width, kernel and depth. `--attention cbam,none` (any categorical parameter's flag)
narrows a choice, `--range lr=1e-4:1e-3` an interval, `--fixed dropout=0.2` picks one
value. Every flag of train_image.py / train_video.py that is not searched passes
through (`--epochs` is per trial and defaults to 10). Each process loads its data once;
the video search reuses the frozen-feature cache. A trial trains exactly as a training
run with the same values (one trainer), and `trial_<id>/` is an ordinary run directory.

Everything goes to `runs/tuning/<image|video>/` (`--directory`, `--project-name`):
`trials.csv` (every trial: hyperparameters, best val accuracy, epochs, the stability
measurements at the best epoch, wall time), `best_hparams.json`, `best.keras` (loads with
`keras.saving.load_model` after `import keras_attn`) and TensorBoard logs under
`trial_<id>/logs/`. Re-running the same
command resumes the search: finished trials are kept, an interrupted one runs again;
a larger `--max-trials` extends it; `--overwrite` starts afresh. A command that
changes the space, data or tuner of an existing project is refused.

### On several machines

The same command runs distributed through Keras Tuner's chief/worker mode. One
process, the chief, holds the search (the oracle) and hands out trials; workers
train them. Put `--directory` on a filesystem every machine mounts at the same
path (NFS or similar): workers write each trial's model and logs there, the chief
writes `trials.csv`, `best_hparams.json` and `best.keras` there when the search ends.

    # machine A (10.0.0.1): the chief; it trains nothing and needs no data
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m tuning image --tuner random --max-trials 40 --directory /shared/tuning

    # machines B, C, ...: one worker each (or one per GPU), each with its own id
    KERASTUNER_TUNER_ID=worker0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m tuning image --tuner random --max-trials 40 --directory /shared/tuning

Start every process with the same command line. Workers wait for the chief (up to an
hour) and may join late; each asks for a trial whenever it is free, so no trial runs
twice. The chief returns once every worker has been told the search is over. If a
worker dies, restart it with the same `KERASTUNER_TUNER_ID`: it takes its unfinished
trial up again (the chief waits for it until then). If the chief dies, restart it: it
reloads the search from the directory, and trials that were running run again.
Without a shared directory the search still works (results reach the chief over gRPC)
but the chief cannot collect `best.keras`, and Hyperband, which continues trials from
earlier checkpoints, fails. The port is plain gRPC without authentication: keep it
inside a trusted network.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from keras_attn.cli import Parser, main_guard
from keras_attn.errors import UserError
from keras_attn.experiments.image import ImageExperiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.spec import Spec, at_least, setting
from keras_attn.tuner_cluster import check_port_free, distributed_role, serve_oracle
from tuning.hypermodels import IMAGE_SPACE, VIDEO_SPACE, ImageHyperModel, VideoHyperModel
from tuning.results import write_results
from tuning.search import TUNERS, make_tuner, prepare_project

OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min"}


@dataclasses.dataclass(frozen=True)
class SearchSettings(Spec):
    """How a search runs; the experiment's own settings come from its spec."""

    tuner: str = setting("random", "search algorithm", choices=tuple(TUNERS), group="search")
    max_trials: int | None = setting(
        None, "trials in all (default 10; not hyperband)", check=at_least(1), group="search"
    )
    max_epochs: int | None = setting(
        None,
        "hyperband: epochs of the longest trials (default: the experiment's --epochs)",
        check=at_least(1),
        group="search",
    )
    factor: int = setting(3, "hyperband: reduction factor", check=at_least(2), group="search")
    hyperband_iterations: int = setting(
        1, "hyperband: brackets repeated", check=at_least(1), group="search"
    )
    initial_points: int | None = setting(
        None,
        "bayesian: random trials before the model guides (default: half of --max-trials)",
        check=at_least(1),
        group="search",
    )
    objective: str = setting(
        "val_accuracy", "what the search optimises", choices=tuple(OBJECTIVES), group="search"
    )
    directory: str = setting("runs/tuning", "where projects go", group="search")
    project_name: str | None = setting(
        None, "the project's folder (default: image or video)", group="search"
    )
    overwrite: bool = setting(False, "start the project afresh", group="search")


# Only where the search differs from the experiment: shorter trials.
TRIAL_DEFAULTS = dict(epochs=10)
EXPERIMENTS = {
    "image": (ImageExperiment, IMAGE_SPACE, ImageHyperModel),
    "video": (VideoExperiment, VIDEO_SPACE, VideoHyperModel),
}
# Flags that apply to one tuner only.
TUNER_ONLY = dict(
    max_trials=("random", "grid", "bayesian"),
    max_epochs=("hyperband",),
    factor=("hyperband",),
    hyperband_iterations=("hyperband",),
    initial_points=("bayesian",),
)
# Settings that may differ between the runs of one project (search.json leaves them out).
NOT_PART_OF_THE_SEARCH = ("max_trials", "overwrite", "directory", "project_name", "initial_points")


def _add_space_flags(parser: argparse.ArgumentParser, space) -> None:
    s = parser.add_argument_group(
        "search space",
        "A categorical parameter's flag narrows it to the comma-separated values given.",
    )
    s.add_argument("--show-space", action="store_true", help="print the search space and exit")
    s.add_argument(
        "--fixed",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fix a hyperparameter to a value of the space (repeatable, or comma-separated)",
    )
    s.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="NAME=LOW:HIGH",
        help="narrow or widen a float hyperparameter's interval",
    )
    for p in space.categorical():
        s.add_argument(
            p.flag,
            dest=f"space_{p.name}",
            metavar="A,B",
            help=f"{p.help} (default: {p.domain_text()})",
        )


parser = Parser(
    prog="python -m tuning",
    description="Keras Tuner searches over the image or video experiment.",
    epilog="See the module docstring (README) for distributed searches.",
)
experiments = parser.add_subparsers(dest="experiment", required=True, metavar="image|video")
for _name, (_spec, _space, _) in EXPERIMENTS.items():
    _sub = experiments.add_parser(_name, help=f"the {_name} experiment (train_{_name}.py)")
    SearchSettings.add_flags(_sub, config_flags=False)
    _spec.add_flags(
        _sub,
        skip=(*_space.names(), "run_dir", "overwrite"),
        defaults=TRIAL_DEFAULTS,
    )
    _add_space_flags(_sub, _space)


def _check_tuner_flags(search: SearchSettings, given: argparse.Namespace) -> None:
    for name, tuners in TUNER_ONLY.items():
        if getattr(given, name) is not None and search.tuner not in tuners:
            raise UserError(f"--{name.replace('_', '-')} does not apply to --tuner {search.tuner}")
    if search.tuner == "hyperband" and given.epochs is not None:
        raise UserError("--epochs does not apply to --tuner hyperband (use --max-epochs)")


class _NoRetracingWarning(logging.Filter):
    """Every trial builds a new model, so tf.function retraces by design: not worth a warning."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def main(argv=None) -> None:
    args = parser.parse_args(argv)
    logging.getLogger("tensorflow").addFilter(_NoRetracingWarning())
    spec_class, space, hypermodel_class = EXPERIMENTS[args.experiment]
    search = SearchSettings.from_args(args)
    _check_tuner_flags(search, args)
    space = space.narrow(
        {p.name: getattr(args, f"space_{p.name}") for p in space.categorical()},
        args.range,
        args.fixed,
    )
    if args.show_space:
        print(space.table())
        return
    hyperband = search.tuner == "hyperband"
    max_trials = None if hyperband else (search.max_trials or 10)
    if hyperband:  # the schedule spans the longest trial
        max_epochs = search.max_epochs or spec_class.default_of("epochs")
        trial_defaults = dict(epochs=max_epochs)
    else:
        max_epochs, trial_defaults = None, TRIAL_DEFAULTS
    # The space's defaults stand for the searched settings in the base spec.
    base = spec_class.from_args(
        args, overrides=trial_defaults, **{p.name: p.effective_default for p in space}
    )
    if args.print_config:
        print(base.config_json())
        return
    initial_points = search.initial_points
    if search.tuner == "bayesian" and initial_points is None:
        initial_points = max(2, max_trials // 2)
    project_name = search.project_name or args.experiment
    role, ip, port = distributed_role()
    if role == "chief":
        check_port_free(ip, port)

    project_dir = Path(search.directory) / project_name
    search_settings = {k: v for k, v in search.config().items() if k not in NOT_PART_OF_THE_SEARCH}
    searched = set(space.names())
    search_settings.update({k: v for k, v in base.config().items() if k not in searched})
    search_settings.update(max_epochs=max_epochs, space=space.describe())
    if role != "worker":  # a worker never deletes or rewrites what the chief owns
        prepare_project(project_dir, search_settings, search.overwrite)
    elif search.overwrite:
        print("Worker: --overwrite is the chief's to apply; ignored here.")

    direction = OBJECTIVES[search.objective]
    hypermodel = hypermodel_class(base, space, search.objective, direction)
    if role != "chief":
        hypermodel.load()  # once per process, before the first trial (a chief needs none)
    tuner = make_tuner(
        search.tuner,
        hypermodel,
        search.objective,
        direction,
        search.directory,
        project_name,
        base.seed,
        max_trials=max_trials,
        max_epochs=max_epochs,
        factor=search.factor,
        hyperband_iterations=search.hyperband_iterations,
        initial_points=initial_points,
    )
    hp_names = [p.name for p in space if space.used_when(p)]
    started = time.perf_counter()
    if role == "chief":
        finished = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        print(f"Chief: {finished} finished trials in {project_dir} kept")
        serve_oracle(tuner, ip, port)
    elif role == "worker":
        print(f"Worker {tuner.tuner_id}: asking the chief at {ip}:{port} for trials", flush=True)
        tuner.search(epochs=base.epochs)
        ran = ", ".join(tuner.trials_run) or "none"
        print(
            f"Worker {tuner.tuner_id}: done after {time.perf_counter() - started:.1f} s; "
            f"ran trials: {ran}; the chief writes the results to {project_dir}"
        )
        return
    else:
        finished = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        if finished:
            print(f"Resuming {project_dir}: {finished} finished trials kept")
        tuner.search(epochs=base.epochs)
    write_results(tuner.oracle, project_dir, hp_names, [p.name for p in space if p.integer])
    print(
        f"Search done in {time.perf_counter() - started:.1f} s "
        f"(tensorboard --logdir {search.directory})"
    )


def cli():
    sys.argv[0] = "python -m tuning"  # how errors name the program
    main_guard(main)


if __name__ == "__main__":
    cli()
