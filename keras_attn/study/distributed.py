"""The study's grid through Keras Tuner's distributed mode: several machines share the runs.

The chief (`KERASTUNER_TUNER_ID=chief`) serves a grid-search oracle over
`variant × axes × seed`; each worker (`worker0`, `worker1`, ...) asks it for a cell,
trains that cell's ordinary run directory under `<out>/runs` and asks again.
`--out` must be a folder every machine sees (a shared filesystem): the chief
writes the report from the run directories once the grid is done. The oracle's
own state lives in `<out>/grid_oracle`, so a restarted chief does not hand out
finished cells again (and a finished run directory is skipped anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import keras_tuner as kt

from keras_attn.study.grid import Cell, free_memory, grid_cells, run_cell, run_dir_for
from keras_attn.training.files import read_json
from keras_attn.training.run import TrainingDiverged


class CellOracle(kt.Oracle):
    """Hands out the grid's cells in seed-major order, each once, to whoever asks next.

    Keras Tuner's GridSearchOracle derives each next combination from a finished trial,
    so with several workers all but one wait from the third cell on (measured: two
    workers were 0.73x one process). The cells are known up front, so any idle worker can
    take the next unstarted one, and a worker that finds none left stops. A trial that was
    running when the chief stopped is retried by Keras Tuner's own reload: no cell is lost.
    """

    def __init__(self, cells: Sequence[Cell], **kwargs):
        super().__init__(max_trials=len(cells), **kwargs)
        self.cells = list(cells)

    @staticmethod
    def values_of(cell: Cell) -> dict:
        return {"variant": cell.variant, "seed": cell.seed, **dict(cell.settings)}

    def end_trial(self, trial):
        super().end_trial(trial)
        # Keras Tuner 1.4.8 saves before it drops the trial from the running ones, so a
        # restarted chief would hand the last finished cell out again.
        self.save()

    def populate_space(self, trial_id):
        started = [trial.hyperparameters.values for trial in self.trials.values()]
        for cell in self.cells:
            values = self.values_of(cell)
            if values not in started:
                return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
        return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}


class GridTuner(kt.Tuner):
    """A Keras Tuner tuner whose trials are the study's cells, run by `run_one`."""

    def __init__(self, out: Path, variants, seeds, run_one: Callable, axes=None, **kwargs):
        self.out = Path(out)
        self.variants = list(variants)
        self.seeds = list(seeds)
        self.axes = {name: list(values) for name, values in (axes or {}).items()}
        self.run_one = run_one
        self.cells_trained: list[Cell] = []
        self.cells_found_complete: list[Cell] = []
        oracle = CellOracle(
            grid_cells(self.variants, self.seeds, self.axes),
            objective=kt.Objective("best_val_accuracy", "max"),
        )
        super().__init__(
            oracle=oracle,
            directory=str(self.out),
            project_name="grid_oracle",
            overwrite=False,
            **kwargs,
        )

    def _populate_initial_space(self):
        # The grid is known: no model has to be built to discover it.
        hp = self.oracle.get_space()
        hp.Choice("variant", self.variants)
        hp.Choice("seed", self.seeds)
        for name, values in self.axes.items():
            hp.Choice(name, values)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        variant = trial.hyperparameters.get("variant")
        seed = int(trial.hyperparameters.get("seed"))
        cell = Cell(variant, seed, tuple((k, trial.hyperparameters.get(k)) for k in self.axes))
        print(f"[study] {self.tuner_id}: {cell.label}", flush=True)
        run_dir = run_dir_for(self.out, *cell)
        # A cell handed out again (its oracle state removed, or a run copied in) whose run
        # finished before is reported, not trained: the closing line must not say it ran.
        complete = read_json(run_dir / "summary.json", default={}).get("status") == "completed"
        try:
            summary = run_cell(self.run_one, cell, run_dir)
        except TrainingDiverged as err:
            # The run directory says "diverged"; the grid counts it and goes on.
            print(f"[study] {cell.label} failed: {err}", flush=True)
            summary = {}
        free_memory()
        (self.cells_found_complete if complete else self.cells_trained).append(cell)
        return {"best_val_accuracy": float(summary.get("best_val_accuracy") or 0.0)}

    # Runs are saved by their own run directories; the tuner keeps no models.
    def save_model(self, trial_id, model, step=0):
        pass

    def load_model(self, trial):
        raise NotImplementedError("the study's models are in <out>/runs/*/best.keras")


def run_distributed_grid(
    out: Path,
    variants: Sequence[str],
    seeds: Sequence[int],
    run_one: Callable,
    role: str,
    ip: str,
    port: int,
    axes: Mapping[str, Sequence] | None = None,
    workers_alive: Callable[[], bool] | None = None,
) -> None:
    """Serves the grid (chief) or works through it (worker); returns when the grid is done
    (or, for a chief that started its own workers, when none of them is left)."""
    from keras_attn.tuner_cluster import serve_oracle

    tuner = GridTuner(out, variants, seeds, run_one, axes)
    if role == "chief":
        serve_oracle(tuner, ip, port, workers_alive=workers_alive)
    else:
        tuner.search()
        trained = "; ".join(cell.label for cell in tuner.cells_trained) or "none"
        found = len(tuner.cells_found_complete)
        complete = f"; {found} already complete" if found else ""
        print(f"[study] {tuner.tuner_id}: done; trained {trained}{complete}", flush=True)
