"""What a trained model predicts for each input, and where it looks.

    python -m keras_attn.explain runs/image/<run> photo1.jpg photo2.png --top 5
    python -m keras_attn.explain runs/video/<run> data/WLASL/videos/00335.mp4
    python -m keras_attn.explain path/to/best.keras image.png --out figures/

RUN_OR_MODEL is a run directory (its best.keras, config.json and summary.json) or a
.keras model of this project. For each input it prints the top-k classes and writes
<out>/<input stem>.png: for an image model the input under the attention map of every
attention block and Grad-CAM of the last convolutional block; for a video model a
filmstrip of the sampled frames above the temporal module's weight on each frame, the
annotated sign shaded when the clip is in the run's index. <out>/predictions.csv holds
every input's top-k. An input that cannot be read is one line on stderr and the others
are still explained; the exit status is then 1 (2: a bad RUN_OR_MODEL or flag).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_attn.cli import Parser, main_guard
from keras_attn.errors import UserError
from keras_attn.explain.figures import Failed, save_png
from keras_attn.explain.image import ImageExplainer
from keras_attn.explain.predictions import csv_rows, describe, figure_names, top_k, write_csv
from keras_attn.explain.source import load_source
from keras_attn.explain.video import VideoExplainer

PROG = "python -m keras_attn.explain"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})")
    return int(text)


parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
parser.add_argument("model", metavar="RUN_OR_MODEL", help="a run directory or a .keras file")
parser.add_argument("inputs", metavar="INPUT", nargs="+", help="images or video clips")
parser.add_argument("--out", default="explain", help="output folder (default: explain/)")
parser.add_argument("--top", type=_positive, default=5, help="classes per input (default: 5)")


def _warn(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def main(argv=None) -> None:
    args = parser.parse_args(argv)

    source = load_source(args.model)
    if source.kind == "image":
        explainer = ImageExplainer(source)
    else:  # a head on cached features, or frames end to end
        explainer = VideoExplainer(source, warn=_warn)

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot create it ({err.strerror or err})") from None
    csv_path = out / "predictions.csv"
    rows, failed = [], 0
    names = figure_names(args.inputs)
    for name, result in zip(names, explainer.explain(args.inputs), strict=True):
        if isinstance(result, Failed):
            _warn(f"{result.path}: {result.reason}")
            failed += 1
            continue
        ranked = top_k(result.probabilities, args.top)
        save_png(result.figure, out / name)
        rows += csv_rows(result.path, ranked, source.class_names, result.true_class)
        print(f"{result.path}: {describe(ranked, source.class_names)}  -> {out / name}", flush=True)
    write_csv(csv_path, rows)
    explained = len(args.inputs) - failed
    print(f"{explained} of {len(args.inputs)} inputs explained; top-{args.top} in {csv_path}")
    if failed:
        sys.exit(1)


def cli():
    main_guard(main, prog=PROG)


if __name__ == "__main__":
    cli()
