"""Does attention make CNN training more stable? Variants × seeds under identical settings.

    python -m keras_attn.study image                  # the default study (see the README)
    python -m keras_attn.study image --attention none,cbam --seeds 5 --epochs 30
    python -m keras_attn.study video --temporal avg,tcn,transformer --seeds 5

Writes <out>/report.md (figures in <out>/figures), results.csv (one row per run) and
curves.csv (one row per run and epoch); every run is an ordinary run directory under
<out>/runs. The same command again skips finished runs and resumes an interrupted one.
Every training flag of train_image.py / train_video.py passes through.

Several machines share one grid through Keras Tuner's distributed mode: set
KERASTUNER_TUNER_ID (chief, worker0, worker1, ...), KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT and run the same command everywhere, with --out on a
filesystem they all see; the chief writes the report when the grid is done.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

from keras_attn.cli import Parser, add_training_flags, main_guard, resolve, show_defaults
from keras_attn.errors import UserError
from keras_attn.experiments import image as image_experiment
from keras_attn.experiments import video as video_experiment
from keras_attn.study import image as image_study
from keras_attn.study import video as video_study
from keras_attn.study.distributed import run_distributed_grid
from keras_attn.study.grid import collect, run_grid, write_study_file, write_tables
from keras_attn.study.report import write_report
from keras_attn.training.files import read_json
from keras_attn.tuner_cluster import check_port_free, distributed_role

# The default image study is sized to finish on 2 CPU cores in under an hour (README):
# 48 px and batch 32 buy the optimizer steps that the cluttered shapes need. `linear`
# (self-attention over every stage's pixels) costs about twice a CBAM run: opt in.
IMAGE_DEFAULTS = {
    **image_experiment.DEFAULTS,
    "attention": "none,channel,spatial,cbam",
    "image_size": 48,
    "synthetic_per_class": 200,
    "batch_size": 32,
    "epochs": 25,
    "seeds": 3,
}
VIDEO_DEFAULTS = {
    **video_experiment.DEFAULTS,
    "temporal": "avg,tcn,transformer",
    "frame_range": "clip",  # sample lead-in and tail too, so temporal focus can be scored
    "seeds": 5,
}
BASELINES = {"image": "none", "video": "avg"}
VARIED = {"image": "attention", "video": "temporal"}

parser = Parser(prog="python -m keras_attn.study", description=__doc__.split("\n\n")[0])
kinds = parser.add_subparsers(dest="kind", required=True, metavar="image|video")
for kind, defaults in (("image", IMAGE_DEFAULTS), ("video", VIDEO_DEFAULTS)):
    sub = kinds.add_parser(kind, help=f"the {kind} study")
    if kind == "image":
        image_experiment.add_image_flags(sub, variants=True)
    else:
        video_experiment.add_video_flags(sub, variants=True)
    add_training_flags(sub)
    study_flags = sub.add_argument_group("study")
    study_flags.add_argument("--seeds", type=int, help="seeds per variant: --seed, --seed + 1, ...")
    study_flags.add_argument("--out", help=f"study folder (default runs/study/{kind})")
    if kind == "image":
        study_flags.add_argument(
            "--focus-images", type=int, default=16, help="fixed val images scored for focus"
        )
        study_flags.add_argument(
            "--focus-every", type=int, default=5, help="log overlay images every N epochs"
        )
    show_defaults(sub, defaults)


def variants_of(value: str, baseline: str) -> list[str]:
    variants = [v.strip() for v in value.split(",") if v.strip()]
    if len(set(variants)) != len(variants):
        raise UserError(f"a variant is listed twice: {value}")
    # Every comparison is against the baseline, so it is always in the grid, first.
    return [baseline] + [v for v in variants if v != baseline]


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


def other_study(out: Path, kind: str):
    """The other kind's finished study beside this one, for the images-vs-video paragraph."""
    other = out.parent / ("video" if kind == "image" else "image")
    study = read_json(other / "study.json", default=None)
    if not study or not (other / "results.csv").exists():
        return None
    curves, runs = collect(other, study["variants"], study["seeds"])
    return curves, runs, study["meta"]


def main():
    args = parser.parse_args()
    kind = args.kind
    defaults = IMAGE_DEFAULTS if kind == "image" else VIDEO_DEFAULTS
    preset = image_experiment.PRESETS.get(getattr(args, "preset", None), {})
    settings = resolve(args, preset, defaults)
    variants = variants_of(settings.pop(VARIED[kind]), BASELINES[kind])
    if settings["seeds"] < 1:
        raise UserError("--seeds must be at least 1")
    seeds = list(range(settings["seed"], settings["seed"] + settings.pop("seeds")))
    out = Path(settings.pop("out") or os.path.join("runs", "study", kind))
    for key in ("kind", "run_dir", "overwrite", "focus_images", "focus_every"):
        settings.pop(key, None)
    role, ip, port = distributed_role()
    if role == "chief":
        check_port_free(ip, port)

    if kind == "image":
        image_study.check_variants(variants, settings)
        data = image_study.load_study_images(settings)
        run_one = image_study.image_runner(settings, data, args.focus_images, args.focus_every)
        data_line = data.summary_line()
        extra = {}
    else:
        video_study.check_variants(variants)
        data = video_experiment.load_video_data(settings)
        run_one = video_study.video_runner(settings, data)
        where_sampled = "whole clip" if settings["frame_range"] == "clip" else "annotated sign"
        source = "" if settings["data_dir"] else "synthetic sign clips, "
        data_line = (
            f"{source}{data.index.summary_line()}; {settings['num_frames']} frames per clip "
            f"sampled over the {where_sampled}"
        )
        extra = {"frozen_backbone_is_random": data.inputs.summary["frozen_backbone_is_random"]}

    meta = dict(
        kind=kind,
        baseline=BASELINES[kind],
        command=shlex.join(["python", "-m", "keras_attn.study", *sys.argv[1:]]),
        config={**settings, **extra},
        versions=software_versions(),
        data=data_line,
        chance=1.0 / len(data.class_names if kind == "image" else data.index.class_names),
        out=str(out),
    )
    out.mkdir(parents=True, exist_ok=True)
    if role != "worker":
        write_study_file(out, dict(kind=kind, variants=variants, seeds=seeds, meta=meta))
    if role == "single":
        run_grid(out, variants, seeds, run_one)
    else:
        run_distributed_grid(out, variants, seeds, run_one, role, ip, port)
        if role == "worker":
            return  # the chief writes the report
    curves, runs = collect(out, variants, seeds)
    write_tables(out, curves, runs)
    report = write_report(curves, runs, meta, out, other=other_study(out, kind))
    counts = runs["status"].value_counts()
    print(
        f"[study] {counts.get('completed', 0)} of {len(runs)} runs completed, "
        f"{counts.get('failed', 0)} failed; report: {report}"
    )


if __name__ == "__main__":
    main_guard(main, prog=parser.prog)
