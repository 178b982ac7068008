"""Does attention make CNN training more stable? Variants × seeds under identical settings.

    python -m keras_attn.study image                  # the default study (see the README)
    python -m keras_attn.study image --attention none,cbam --seeds 5 --epochs 30
    python -m keras_attn.study image --data cluttered_mnist --train-per-class 25,100,400 \
        --tune-lr 1e-3,3e-3,1e-2
    python -m keras_attn.study video --temporal avg,tcn:temporal_pool=avg,tcn --seeds 5

Every training flag of train_image.py / train_video.py passes through, and any of them
given a comma-separated list becomes a grid axis: every variant runs at every value
(`--train-per-class 25,100`, `--distractors 0,4,8`, `--temporal-pool avg,attention`).
A variant may fix other settings too (`tcn:temporal_pool=avg`).
`--tune-lr` tries each learning rate too and reports every variant and condition at its
own best one, chosen on validation.

Writes <out>/report.md (figures in <out>/figures), results.csv (one row per run) and
curves.csv (one row per run and epoch); every run is an ordinary run directory under
<out>/runs. The same command again skips finished runs and resumes an interrupted one.

Several machines share one grid through Keras Tuner's distributed mode: set
KERASTUNER_TUNER_ID (chief, worker0, worker1, ...), KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT and run the same command everywhere, with --out on a
filesystem they all see; the chief writes the report when the grid is done.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shlex
import sys
from pathlib import Path

from keras_attn.cli import Parser, main_guard
from keras_attn.errors import UserError
from keras_attn.experiments import video as video_experiment
from keras_attn.experiments.image import ImageExperiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.spec import Spec, at_least, non_negative, positive, setting
from keras_attn.study import claims, local_workers, seed_rule, selection, slim
from keras_attn.study import image as image_study
from keras_attn.study import video as video_study
from keras_attn.study.distributed import run_distributed_grid
from keras_attn.study.grid import (
    collect,
    grid_cells,
    run_grid,
    variant_settings,
    write_study_file,
    write_tables,
)
from keras_attn.study.report import Grid, write_report
from keras_attn.training import acceleration
from keras_attn.training.files import read_json
from keras_attn.tuner_cluster import check_port_free, distributed_role


@dataclasses.dataclass(frozen=True)
class StudySettings(Spec):
    """What a study adds to its experiment's settings."""

    seeds: str = setting(
        "3",
        "seeds per variant: --seed, --seed + 1, ...; auto: add seeds until the main "
        "comparisons' 95% intervals are within --target-halfwidth (or --max-seeds)",
        metavar="N|auto",
        check=seed_rule.check_seeds,
    )
    target_halfwidth: float | None = setting(
        None, "--seeds auto: the half-width to reach (default 0.01)", check=positive
    )
    max_seeds: int = setting(20, "--seeds auto: the most seeds to run", check=at_least(1))
    out: str | None = setting(None, "study folder (default runs/study/<kind>)")
    focus_images: int = setting(16, "images: fixed val images scored for focus", check=non_negative)
    focus_every: int = setting(5, "images: log overlay images every N epochs", check=at_least(1))
    final_focus_images: int = setting(
        2000,
        "images: fixed val images scored once per run on its best-val model (pointing game, "
        "AUROC, randomised-weights check, erase test; 0: off)",
        check=non_negative,
    )
    workers: int = setting(
        1,
        "train N grid cells at once in N processes on this machine, cores/N threads each",
        metavar="N",
        check=at_least(1),
    )
    tune_lr: str | None = setting(
        None,
        "learning rates tried for every variant and condition, each reported at its best "
        "(highest mean best val accuracy over seeds)",
        metavar="LR1,LR2,...",
        check=selection.check_rates,
    )


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of study: its experiment, the setting it varies and the study's defaults."""

    spec: type
    varied: str
    baseline: str
    defaults: dict  # the study's own defaults of experiment settings, variants included
    seeds: str


KINDS = {
    # 48 px and batch 32 buy the optimizer steps that the cluttered shapes need. Runs
    # stop on a stated rule (val loss, patience 8 counted from epoch 16, at most 40
    # epochs) so that they end on a plateau: counted from epoch 1, the rule stopped 3 of
    # 18 cluttered-MNIST runs at chance, whose val losses (BatchNorm lagging the weights
    # at high rates) made epoch 1 the best (docs/findings/clutter).
    # `linear` (self-attention over every stage's pixels) costs about twice a CBAM run:
    # opt in.
    "image": Kind(
        ImageExperiment,
        "attention",
        "none",
        dict(
            attention="none,channel,spatial,cbam",
            image_size=48,
            train_per_class=200,
            batch_size=32,
            epochs=40,
            early_stopping=8,
            early_stopping_on="val_loss",
            early_stopping_start=15,
        ),
        seeds="3",
    ),
    "video": Kind(
        VideoExperiment,
        "temporal",
        "avg",
        # Ablations that change one thing each: attention pooling alone, the TCN alone
        # (then a mean), both, and self-attention. Sample lead-in and tail too, so
        # temporal focus can be scored.
        dict(
            temporal="avg,attention,tcn:temporal_pool=avg,tcn,transformer",
            frame_range="clip",
            early_stopping=8,
            early_stopping_on="val_loss",
        ),
        seeds="5",
    ),
}
# Seeds come from --seed and --seeds; run directories are per cell.
NOT_AXES = ("seed",)

parser = Parser(prog="python -m keras_attn.study", description=__doc__.split("\n\n")[0])
kinds = parser.add_subparsers(dest="kind", required=True, metavar="image|video|check|slim")
for name, kind in KINDS.items():
    sub = kinds.add_parser(name, help=f"the {name} study")
    kind.spec.add_flags(
        sub,
        lists=[n for n in kind.spec.listable() if n not in NOT_AXES],
        defaults=kind.defaults,
        skip=("run_dir", "overwrite"),
    )
    StudySettings.add_flags(sub, config_flags=False, defaults=dict(seeds=kind.seeds))
checker = kinds.add_parser(
    "check", help="recompute every figure of the README's findings from the committed data"
)
checker.add_argument(
    "folder", nargs="?", default="docs/findings", help="holds findings.toml (default: %(default)s)"
)

slimmer = kinds.add_parser(
    "slim", help="drop the test probabilities from a study's runs before committing them"
)
slimmer.add_argument("folder", help="a study folder (holds runs/)")


def variants_of(value: str, baseline: str) -> list[str]:
    variants = [v.strip() for v in value.split(",") if v.strip()]
    if len(set(variants)) != len(variants):
        raise UserError(f"a variant is listed twice: {value}")
    # Every comparison is against the baseline, so it is always in the grid, first.
    return [baseline] + [v for v in variants if v != baseline]


def grid_axes(args, kind: Kind, study: StudySettings) -> dict[str, list]:
    """The settings given as lists, by name, in flag order (the varied one aside); a
    single value is put back on `args` as a plain, typed setting."""
    axes = {}
    for name in kind.spec.listable():
        text = getattr(args, name, None)
        if name == kind.varied or name in NOT_AXES or text is None:
            continue
        values = kind.spec.parse_list(name, text)
        if len(values) == 1:
            setattr(args, name, values[0])
        else:
            axes[name] = values
            setattr(args, name, None)
    if study.tune_lr:
        if "lr" in axes:
            raise UserError("give the learning rates once: --lr A,B or --tune-lr A,B")
        axes[selection.TUNED] = selection.rates(study.tune_lr)
    return axes


def software_versions() -> dict:
    import cv2
    import keras
    import numpy
    import pandas
    import tensorflow

    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "opencv": cv2.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def check_same_precision(out: Path, precision: str, bf16_pays: bool) -> None:
    """Refuses to go on with a study in `out` that computed in another precision: `auto`
    resolves per machine, so the same command on a CPU with bfloat16 units would otherwise
    stop at the first finished run (its config differs) or mix precisions in one grid."""
    recorded = (read_json(out / "study.json", default=None) or {}).get("meta", {})
    before = recorded.get("config", {}).get("mixed_precision")
    if before is None or before == precision:
        return
    auto, why = acceleration.resolve_precision("auto", bf16_pays)
    here = f" (what auto is here: {why})" if precision == auto else ""
    raise UserError(
        f"{out} holds a study computed with --mixed-precision {before}; this command's is "
        f"{precision}{here}: pass --mixed-precision {before} to go on with it, or choose "
        "another --out"
    )


def other_study(out: Path, kind: str):
    """The other kind's finished study beside this one, for the images-vs-video paragraph."""
    other = out.parent / ("video" if kind == "image" else "image")
    study = read_json(other / "study.json", default=None)
    if not study or not (other / "results.csv").exists():
        return None
    curves, runs = collect(other, study["variants"], study["seeds"], study.get("axes"))
    return curves, runs, study["meta"]


def main():
    args = parser.parse_args()
    if args.kind == "check":
        sys.exit(1 if claims.check(args.folder) else 0)
    if args.kind == "slim":
        counts = slim.slim(args.folder)
        print(
            f"{args.folder}: {counts['slimmed']} test_predictions.npz slimmed "
            f"({counts['saved_bytes'] / 1e6:.1f} MB saved), {counts['already']} already slim, "
            f"{counts['unreadable']} unreadable left as they are"
        )
        return
    kind = KINDS[args.kind]
    study = StudySettings.from_args(args, overrides=dict(seeds=kind.seeds))
    variants = variants_of(getattr(args, kind.varied) or kind.defaults[kind.varied], kind.baseline)
    setattr(args, kind.varied, None)
    axes = grid_axes(args, kind, study)
    defaults = {k: v for k, v in kind.defaults.items() if k != kind.varied}
    base = kind.spec.from_args(args, overrides=defaults, **{kind.varied: kind.baseline})
    for cell in grid_cells(variants, [base.seed], axes):  # checked before any data loads
        base.replace(
            **variant_settings(kind.spec, kind.varied, cell.variant), **dict(cell.settings)
        )
    if args.print_config:
        print(base.config_json())
        return
    role, ip, port = distributed_role()
    # A local worker of a `--seeds auto` study is given its round's seed count (below);
    # the rule's own settings in its command are the chief's.
    target = None if local_workers.is_local_worker() else study.target_halfwidth
    start = seed_rule.first_seeds(study.seeds, target, study.max_seeds)
    seeds = list(range(base.seed, base.seed + start))
    out = Path(study.out or os.path.join("runs", "study", args.kind))
    check_same_precision(out, base.mixed_precision, base.BF16_PAYS_ON_CPU)
    if study.seeds == seed_rule.AUTO and role != "single":
        raise UserError(
            "--seeds auto needs the whole grid's results after each round: run it in one "
            "study process (--workers N shares each round); give a number of seeds to share "
            "a grid across machines"
        )
    if study.workers > 1 and role != "single":
        raise UserError("--workers starts its own workers: not with KERASTUNER_* variables")
    if role == "chief":
        check_port_free(ip, port)

    if args.kind == "image":
        images = image_study.StudyImages(axes)
        data_line, class_names = images.describe(base)
        run_one = image_study.ImageRunner(
            base,
            images,
            study.focus_images,
            study.focus_every,
            study.final_focus_images,
            # Untuned, every run is reported: each measures itself as it finishes.
            focus_each_run=not study.tune_lr,
        )
        extra = {}
    else:
        data = video_experiment.load_video_data(base)
        run_one = video_study.video_runner(base, data)
        where_sampled = "whole clip" if base.frame_range == "clip" else "annotated sign"
        source = "" if base.data_dir else "synthetic sign clips, "
        data_line = (
            f"{source}{data.index.summary_line()}; {base.num_frames} frames per clip "
            f"sampled over the {where_sampled}"
        )
        class_names = data.index.class_names
        extra = {"frozen_backbone_is_random": data.inputs.summary["frozen_backbone_is_random"]}
    config = {k: v for k, v in base.config().items() if k != kind.varied and k not in axes}

    meta = dict(
        kind=args.kind,
        baseline=kind.baseline,
        axes=axes,
        tuned=[selection.TUNED] if study.tune_lr else [],
        command=shlex.join(["python", "-m", "keras_attn.study", *sys.argv[1:]]),
        config={**config, **extra},
        versions=software_versions(),
        data=data_line,
        chance=1.0 / len(class_names),
        out=str(out),
    )
    out.mkdir(parents=True, exist_ok=True)
    if role != "worker":
        study_file = dict(kind=args.kind, variants=variants, seeds=seeds, axes=axes, meta=meta)
        write_study_file(out, study_file)

    def train(seeds):
        if study.workers == 1:
            run_grid(out, variants, seeds, run_one, axes)
            return
        # The data is on disk before any worker starts (it was loaded above). Each worker
        # runs this command with the round's seeds (the last --seeds wins).
        argv = [*sys.argv[1:], "--seeds", str(len(seeds))]
        loopback, free = "127.0.0.1", local_workers.free_port()
        with local_workers.LocalWorkers(study.workers, argv, loopback, free) as workers:
            run_distributed_grid(
                out, variants, seeds, run_one, "chief", loopback, free, axes, workers.alive
            )

    if role == "single" and study.seeds == seed_rule.AUTO:

        def run_round(seeds):
            write_study_file(out, dict(study_file, seeds=seeds))
            train(seeds)

        def halfwidth(seeds):
            return seed_rule.widest_halfwidth(
                Grid(*collect(out, variants, seeds, axes), meta).main.test
            )

        target = study.target_halfwidth or seed_rule.DEFAULT_TARGET
        seeds, meta["seed_rule"] = seed_rule.grow(
            seeds, run_round, halfwidth, target, study.max_seeds
        )
    elif role == "single":
        train(seeds)
    else:
        run_distributed_grid(out, variants, seeds, run_one, role, ip, port, axes)
        if role == "worker":
            return  # the chief writes the report
    curves, runs = collect(out, variants, seeds, axes)
    if args.kind == "image":
        # Measured once per reported run: in a lr sweep, only the chosen rate's runs.
        chosen = selection.select(runs, axes, meta["tuned"])
        if run_one.final_focus(out, grid_cells(variants, seeds, axes), chosen):
            curves, runs = collect(out, variants, seeds, axes)
    write_tables(out, curves, runs)
    report = write_report(curves, runs, meta, out, other=other_study(out, args.kind))
    counts = runs["status"].value_counts()
    print(
        f"[study] {counts.get('completed', 0)} of {len(runs)} runs completed, "
        f"{counts.get('failed', 0)} failed; report: {report}"
    )


def cli():
    main_guard(main, prog=parser.prog)


if __name__ == "__main__":
    cli()
