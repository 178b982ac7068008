"""The study report: `report.md` and its figures, written from the grid's tables.

`write_report` is the entry point. `analysis.Study` computes one study's statistics once;
`tables` (setup, stability, paired differences, focus), `text` (summary, key questions,
limits) and `figures` turn them into sections; `formatting` fixes how numbers and verdicts
read. Every sentence about an effect comes from a computed interval and its verdict, so the
text cannot claim more than the numbers.
"""

from __future__ import annotations

from pathlib import Path

from keras_attn.files import atomic_write_text
from keras_attn.study.report.analysis import Study
from keras_attn.study.report.figures import figures_section, write_figures
from keras_attn.study.report.tables import (
    focus_section,
    md_table,
    paired_section,
    setup_section,
    stability_section,
    test_section,
)
from keras_attn.study.report.text import (
    limits_section,
    question_images_video,
    question_little_data,
    question_stabilise,
    summary,
)

__all__ = ["Study", "md_table", "render_report", "write_figures", "write_report"]


def render_report(s: Study, figures: dict[str, Path], out_dir: Path, other=None) -> str:
    """The markdown text of the report."""
    sections = [
        f"# keras-attn study: {s.kind}",
        summary(s),
        setup_section(s),
        stability_section(s),
        paired_section(s),
        test_section(s),
        figures_section(figures, out_dir),
        focus_section(s),
        "## Key questions",
        question_stabilise(s),
        question_images_video(s, other),
        question_little_data(s),
        limits_section(s),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(curves, runs, meta: dict, out_dir, other=None) -> Path:
    """Write `out_dir/report.md` and `out_dir/figures/*.png`; return the report's path.

    `other` is `(curves, runs, meta)` of the other kind's study, for the
    images-vs-video question; without it the report says how to run that study.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = Study(curves, runs, meta)
    other_study = Study(*other) if other is not None else None
    figures = write_figures(curves, runs, meta, study.variants, out_dir / "figures")
    path = out_dir / "report.md"
    atomic_write_text(path, render_report(study, figures, out_dir, other_study))
    return path
