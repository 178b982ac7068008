"""The study report: `report.md` and its figures, written from the grid's tables.

`write_report` is the entry point. `grid.Grid` splits the grid into conditions, picks each
variant's tuned learning rate and corrects every test together; `analysis.Study` computes
one condition's statistics once; `tables` and `grid_tables` (setup, lr sweep, stability,
paired differences, test, focus, interactions), `text` (summary, key questions, limits)
and `figures` turn them into sections; `formatting` fixes how numbers and verdicts
read. Every sentence about an effect comes from a computed interval and its verdict, so the
text cannot claim more than the numbers.
"""

from __future__ import annotations

from pathlib import Path

from keras_attn.files import atomic_write_text
from keras_attn.study.report.analysis import Study
from keras_attn.study.report.figures import figures_section, write_figures, write_grid_figures
from keras_attn.study.report.grid import Grid, condition_label
from keras_attn.study.report.grid_tables import (
    endpoints_section,
    final_focus_section,
    interaction_section,
    seed_variance_section,
    tuning_section,
)
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

__all__ = ["Grid", "Study", "md_table", "render_report", "write_figures", "write_report"]


def _demoted(section: str) -> str:
    """A section one heading level down, to sit under its condition's heading."""
    return "\n".join("#" + line if line.startswith("#") else line for line in section.split("\n"))


def condition_sections(s: Study) -> list[str]:
    """One condition's tables: stability, paired differences, test, focus."""
    sections = [
        stability_section(s),
        endpoints_section(s),
        paired_section(s),
        test_section(s),
        final_focus_section(s),
        focus_section(s),
    ]
    return [section for section in sections if section]


def render_report(g: Grid, figures: dict[str, Path], out_dir: Path, other=None) -> str:
    """The markdown text of the report."""
    s = g.main
    sections = [f"# keras-attn study: {s.kind}", summary(s)]
    if g.multi:
        sections.append(
            f"This grid has {len(g.conditions)} conditions; the summary above, the figures and "
            f"the key questions read the last one ({s.meta['condition']}). Each condition has "
            "its own tables below; every test p-value is Holm-corrected over the whole report."
        )
    sections += [setup_section(s, g.runs), tuning_section(g)]
    for condition, study in g.conditions:
        if g.multi:
            sections.append(f"## Condition: {condition_label(condition)}")
            sections += [_demoted(section) for section in condition_sections(study)]
        else:
            sections += condition_sections(study)
    sections += [
        interaction_section(g),
        seed_variance_section(g),
        figures_section(figures, out_dir),
        "## Key questions",
        question_stabilise(s),
        question_images_video(s, other),
        question_little_data(s, g),
        limits_section(s, g),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def write_report(curves, runs, meta: dict, out_dir, other=None) -> Path:
    """Write `out_dir/report.md` and `out_dir/figures/*.png`; return the report's path.

    `other` is `(curves, runs, meta)` of the other kind's study, for the
    images-vs-video question; without it the report says how to run that study.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = Grid(curves, runs, meta)
    other_study = Grid(*other).main if other is not None else None
    s = grid.main
    figures = write_figures(s.curves, s.runs, meta, s.variants, out_dir / "figures")
    figures.update(write_grid_figures(grid, out_dir / "figures"))
    path = out_dir / "report.md"
    atomic_write_text(path, render_report(grid, figures, out_dir, other_study))
    return path
