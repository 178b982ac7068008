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
value. The data flags are those of train_image.py / train_video.py. Each process
loads its data once; the video search reuses the frozen-feature cache.

Everything goes to `runs/tuning/<image|video>/` (`--directory`, `--project-name`):
`trials.csv` (every trial: hyperparameters, best val accuracy, epochs, wall time),
`best_hparams.json`, `best.keras` (loads with `keras.saving.load_model` after
`import keras_attn`) and TensorBoard logs under `logs/<trial>/`. Re-running the same
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
import logging
import sys
import time
from pathlib import Path

from keras_attn.cli import Parser, main_guard, resolve
from keras_attn.data.video import SAMPLING_MODES
from keras_attn.errors import UserError
from keras_attn.models.backbones import BACKBONES, PRETRAINABLE
from keras_attn.training.config import LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig
from keras_attn.tuner_cluster import check_port_free, distributed_role, serve_oracle
from tuning.hypermodels import IMAGE_SPACE, VIDEO_SPACE, ImageHyperModel, VideoHyperModel
from tuning.results import write_results
from tuning.search import TUNERS, make_tuner, prepare_project

OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min"}

# Defaults of the settings that are not searched: the training scripts' where they exist
# (--max-epochs defaults to their --epochs), so a search runs on the data they train on.
COMMON_DEFAULTS = dict(
    tuner="random",
    max_trials=None,
    epochs=10,
    max_epochs=None,
    factor=3,
    hyperband_iterations=1,
    initial_points=None,
    objective="val_accuracy",
    directory="runs/tuning",
    project_name=None,
    seed=0,
    optimizer="adamw",
    schedule="cosine",
    loss="crossentropy",
    early_stopping=0,
)
IMAGE_DEFAULTS = dict(
    COMMON_DEFAULTS,
    max_epochs_default=20,
    data="synthetic",
    data_dir=None,
    image_size=None,
    val_fraction=0.2,
    synthetic_per_class=400,
    backbone="small_cnn",
    backbone_weights="none",
    fine_tune=None,
    batch_size=64,
    warmup_epochs=1.0,
)
VIDEO_DEFAULTS = dict(
    COMMON_DEFAULTS,
    max_epochs_default=20,
    data_dir=None,
    synthetic_clips_per_class=100,
    val_split="test",
    limit_classes=10,
    class_order="frequency",
    sampling="uniform",
    crop_bbox=False,
    image_size=None,
    backbone="mobilenet_v2",
    backbone_weights="auto",
    cache_dir=None,
    batch_size=4,
    warmup_epochs=0.0,
)
EXPERIMENTS = {
    "image": (IMAGE_SPACE, IMAGE_DEFAULTS, ImageHyperModel),
    "video": (VIDEO_SPACE, VIDEO_DEFAULTS, VideoHyperModel),
}
# Settings that may differ between the runs of one project (search.json leaves them out).
NOT_PART_OF_THE_SEARCH = (
    "max_trials",
    "overwrite",
    "directory",
    "project_name",
    "show_space",
    "cache_dir",
    "fixed",
    "range",
    "max_epochs_default",
    "initial_points",
)


def _add_search_flags(parser: argparse.ArgumentParser, space) -> None:
    g = parser.add_argument_group("search")
    g.add_argument("--tuner", choices=TUNERS, help="search algorithm (default: random)")
    g.add_argument("--max-trials", type=int, help="trials in all (default 10; not hyperband)")
    g.add_argument("--epochs", type=int, help="epochs per trial (default 10; not hyperband)")
    g.add_argument("--max-epochs", type=int, help="hyperband: epochs of the longest trials")
    g.add_argument("--factor", type=int, help="hyperband: reduction factor (default 3)")
    g.add_argument("--hyperband-iterations", type=int, help="hyperband: brackets repeated")
    g.add_argument(
        "--initial-points",
        type=int,
        help="bayesian: random trials before the model guides (default: half of --max-trials)",
    )
    g.add_argument("--objective", choices=OBJECTIVES, help="what the search optimises")
    g.add_argument("--directory", help="where projects go (default runs/tuning)")
    g.add_argument("--project-name", help="the project's folder (default: image or video)")
    g.add_argument("--seed", type=int, help="the tuner's sampling, data order, initial weights")
    g.add_argument("--overwrite", action="store_true", help="start the project afresh")
    g.add_argument("--show-space", action="store_true", help="print the search space and exit")
    s = parser.add_argument_group(
        "search space",
        "A categorical parameter's flag narrows it to the comma-separated values given.",
    )
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
    t = parser.add_argument_group("training (not searched)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--optimizer", choices=OPTIMIZERS)
    t.add_argument("--schedule", choices=SCHEDULES)
    t.add_argument("--warmup-epochs", type=float)
    t.add_argument("--loss", choices=LOSSES)
    t.add_argument(
        "--early-stopping", type=int, metavar="N", help="stop a trial after N epochs without gain"
    )


parser = Parser(
    prog="python -m tuning",
    description="Keras Tuner searches over the image or video experiment.",
    epilog="See the module docstring (README) for distributed searches.",
)
experiments = parser.add_subparsers(dest="experiment", required=True, metavar="image|video")
image = experiments.add_parser("image", help="the image experiment (train_image.py)")
d = image.add_argument_group("data")
d.add_argument("--data", choices=("synthetic", "folder", "cifar10", "cifar100"))
d.add_argument("--data-dir", help="folder data: class-per-subfolder, optional train/ val/")
d.add_argument("--image-size", type=int, help="side in pixels (default per data source)")
d.add_argument("--val-fraction", type=float, help="folder without val/: held-out share")
d.add_argument("--synthetic-per-class", type=int, help="synthetic train images per class")
d.add_argument("--backbone", choices=BACKBONES)
d.add_argument("--backbone-weights", metavar="imagenet|none|PATH")
d.add_argument("--fine-tune", action="store_true", default=None, help="train a pretrained backbone")
_add_search_flags(image, IMAGE_SPACE)

video = experiments.add_parser("video", help="the video experiment (train_video.py)")
d = video.add_argument_group("data")
d.add_argument("--data-dir", help="WLASL folder: index file + videos/ (default: synthetic)")
d.add_argument("--synthetic-clips-per-class", type=int, help="synthetic set size")
d.add_argument("--val-split", choices=("val", "test"), help="validate on this split")
d.add_argument("--limit-classes", type=int, metavar="N", help="keep N glosses (0: all)")
d.add_argument("--class-order", choices=("frequency", "alphabetical"))
d.add_argument("--sampling", choices=SAMPLING_MODES, help="where in the sign to sample")
d.add_argument("--crop-bbox", action="store_true", default=None, help="crop to the signer's box")
d.add_argument("--image-size", type=int, help="frame side (default 96 synthetic, 224)")
d.add_argument("--backbone", choices=PRETRAINABLE, help="frozen frame encoder")
d.add_argument("--backbone-weights", metavar="auto|imagenet|none|PATH")
d.add_argument("--cache-dir", help="feature cache folder (default data/cache/features)")
_add_search_flags(video, VIDEO_SPACE)


def _check_flags(settings: dict, given: argparse.Namespace, space) -> None:
    hyperband = settings["tuner"] == "hyperband"
    for flag, dest, applies in (
        ("--max-trials", "max_trials", not hyperband),
        ("--epochs", "epochs", not hyperband),
        ("--max-epochs", "max_epochs", hyperband),
        ("--factor", "factor", hyperband),
        ("--hyperband-iterations", "hyperband_iterations", hyperband),
        ("--initial-points", "initial_points", settings["tuner"] == "bayesian"),
    ):
        if getattr(given, dest) is not None and not applies:
            raise UserError(f"{flag} does not apply to --tuner {settings['tuner']}")
    for flag, dest, least in (
        ("--max-trials", "max_trials", 1),
        ("--epochs", "epochs", 1),
        ("--max-epochs", "max_epochs", 1),
        ("--factor", "factor", 2),
        ("--hyperband-iterations", "hyperband_iterations", 1),
        ("--initial-points", "initial_points", 1),
        ("--early-stopping", "early_stopping", 0),
    ):
        if settings[dest] is not None and settings[dest] < least:
            raise UserError(f"{flag} must be at least {least} (got {settings[dest]})")
    try:  # the training flags, with the space's defaults for the searched ones
        TrainConfig(
            epochs=settings["schedule_epochs"],
            lr=space.params["lr"].default,
            **{k: settings[k] for k in ("batch_size", "optimizer", "schedule", "loss", "seed")},
            warmup_epochs=settings["warmup_epochs"],
        ).validate()
    except ValueError as err:
        raise UserError(str(err)) from None


class _NoRetracingWarning(logging.Filter):
    """Every trial builds a new model, so tf.function retraces by design: not worth a warning."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def main(argv=None) -> None:
    args = parser.parse_args(argv)
    logging.getLogger("tensorflow").addFilter(_NoRetracingWarning())
    space, defaults, hypermodel_class = EXPERIMENTS[args.experiment]
    settings = resolve(args, {}, defaults)
    space = space.narrow(
        {p.name: getattr(args, f"space_{p.name}") for p in space.categorical()},
        args.range,
        args.fixed,
    )
    if args.show_space:
        print(space.table())
        return
    hyperband = settings["tuner"] == "hyperband"
    settings["max_trials"] = settings["max_trials"] or (None if hyperband else 10)
    settings["max_epochs"] = settings["max_epochs"] or (
        defaults["max_epochs_default"] if hyperband else None
    )
    settings["schedule_epochs"] = settings["max_epochs"] if hyperband else settings["epochs"]
    settings["direction"] = OBJECTIVES[settings["objective"]]
    settings["project_name"] = settings["project_name"] or args.experiment
    if settings["tuner"] == "bayesian" and settings["initial_points"] is None:
        settings["initial_points"] = max(2, settings["max_trials"] // 2)
    _check_flags(settings, args, space)
    role, ip, port = distributed_role()
    if role == "chief":
        check_port_free(ip, port)

    project_dir = Path(settings["directory"]) / settings["project_name"]
    search_settings = {
        k: v
        for k, v in settings.items()
        if k not in NOT_PART_OF_THE_SEARCH and not k.startswith("space_")
    }
    search_settings["space"] = space.describe()
    if role != "worker":  # a worker never deletes or rewrites what the chief owns
        prepare_project(project_dir, search_settings, settings["overwrite"])
    elif settings["overwrite"]:
        print("Worker: --overwrite is the chief's to apply; ignored here.")

    hypermodel = hypermodel_class(space, settings)
    if role != "chief":
        hypermodel.load()  # once per process, before the first trial (a chief needs none)
    tuner = make_tuner(
        settings["tuner"],
        hypermodel,
        settings["objective"],
        settings["direction"],
        settings["directory"],
        settings["project_name"],
        settings["seed"],
        max_trials=settings["max_trials"],
        max_epochs=settings["max_epochs"],
        factor=settings["factor"],
        hyperband_iterations=settings["hyperband_iterations"],
        initial_points=settings["initial_points"],
    )
    hp_names = [p.name for p in space if space.used_when(p)]
    started = time.perf_counter()
    if role == "chief":
        finished = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        print(f"Chief: {finished} finished trials in {project_dir} kept")
        serve_oracle(tuner, ip, port)
    elif role == "worker":
        print(f"Worker {tuner.tuner_id}: asking the chief at {ip}:{port} for trials", flush=True)
        tuner.search(epochs=settings["epochs"])
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
        tuner.search(epochs=settings["epochs"])
    write_results(tuner.oracle, project_dir, hp_names, [p.name for p in space if p.integer])
    print(
        f"Search done in {time.perf_counter() - started:.1f} s "
        f"(tensorboard --logdir {settings['directory']})"
    )


if __name__ == "__main__":
    sys.argv[0] = "python -m tuning"  # how errors name the program
    main_guard(main)
