"""Keras Tuner HyperModels for the image and video experiments.

A trial is an ordinary run: the trial's values replace those settings of the
experiment's spec, and the experiment's own `train` trains it in the trial's
directory (`config.json`, `history.csv` with the stability columns, `summary.json`,
`best.keras`, TensorBoard logs) exactly as `train_image.py` / `train_video.py` would.
Each process loads its data once (lazily: a distributed chief never needs it); the
video experiment prepares the frozen-feature inputs once per distinct number of
frames and feature kind, from the on-disk feature cache when it can.
"""

from __future__ import annotations

from pathlib import Path

import keras_tuner as kt
import pandas as pd

from keras_attn.data.images import steps_per_epoch as image_steps_per_epoch
from keras_attn.experiments import image as image_experiment
from keras_attn.experiments import video as video_experiment
from keras_attn.experiments.image import ImageExperiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.layers import ATTENTION, TEMPORAL
from keras_attn.spec import Spec
from keras_attn.training.run import TrainingDiverged, compile_for_training
from tuning.space import Param, Space, accepting


def searched(spec: type[Spec], name: str, **domain) -> Param:
    """A hyperparameter over the spec's setting `name`: its help and default are the
    spec's; categorical string settings search all their choices unless `values`."""
    choices = spec.choices_of(name)
    if choices is not None and "values" not in domain:
        domain["values"] = tuple(choices)
    return Param(name, spec.help_of(name), spec.default_of(name), **domain)


_LR = dict(low=1e-4, high=1e-2, log=True)
_WD = dict(low=1e-6, high=1e-2, log=True)
_LS = dict(low=0.0, high=0.2, step=0.05, ceiling=1.0)
_DROPOUT = dict(low=0.0, high=0.5, step=0.1, ceiling=1.0)

IMAGE_SPACE = Space(
    [
        searched(ImageExperiment, "attention"),
        searched(
            ImageExperiment,
            "reduction",
            values=(4, 8, 16),
            floor=1,
            parent="attention",
            when=accepting(ATTENTION, "reduction"),
        ),
        searched(
            ImageExperiment,
            "kernel_size",
            values=(3, 5, 7),
            floor=1,
            parent="attention",
            when=accepting(ATTENTION, "kernel_size"),
        ),
        searched(ImageExperiment, "lr", **_LR),
        searched(ImageExperiment, "weight_decay", **_WD),
        searched(ImageExperiment, "label_smoothing", **_LS),
        searched(ImageExperiment, "dropout", **_DROPOUT),
    ]
)

VIDEO_SPACE = Space(
    [
        searched(VideoExperiment, "num_frames", values=(4, 8), floor=1),
        searched(VideoExperiment, "frame_attention"),
        searched(VideoExperiment, "temporal"),
        searched(
            VideoExperiment,
            "temporal_pool",
            parent="temporal",
            when=accepting(TEMPORAL, "pool"),
        ),
        searched(VideoExperiment, "width", values=(64, 128, 256), floor=1),
        searched(
            VideoExperiment,
            "tcn_kernel",
            values=(2, 3, 5),
            floor=1,
            parent="temporal",
            when=accepting(TEMPORAL, "kernel_size"),
        ),
        searched(
            VideoExperiment,
            "tcn_levels",
            values=(2, 3, 4),
            floor=1,
            parent="temporal",
            when=accepting(TEMPORAL, "dilations"),
        ),
        searched(VideoExperiment, "lr", **_LR),
        searched(VideoExperiment, "weight_decay", **_WD),
        searched(VideoExperiment, "label_smoothing", **_LS),
        searched(VideoExperiment, "dropout", **{**_DROPOUT, "high": 0.6}),
    ]
)


def best_epoch_metrics(run_dir: Path, objective: str, direction: str) -> dict:
    """The trial's metrics at its best epoch by the objective (history.csv), plus its
    epochs, best epoch and best val accuracy: what the oracle records."""
    history = pd.read_csv(Path(run_dir) / "history.csv")
    series = history[objective].astype(float)
    best = series.idxmax() if direction == "max" else series.idxmin()
    if pd.isna(best):
        best = history.index[-1]
    row = history.loc[best]
    metrics = {k: float(v) for k, v in row.items() if k != "epoch" and pd.notna(v)}
    metrics.update(
        best_val_accuracy=float(history["val_accuracy"].max()),
        best_epoch=int(row["epoch"]),
        epochs=int(history["epoch"].iloc[-1]),
    )
    return metrics


class ExperimentHyperModel(kt.HyperModel):
    """A search over one experiment: the space's values replace the base spec's.

    Args:
        experiment: the experiment module (`train`, `build_model`, `resolved`).
        base: the spec every trial starts from (the command line's settings).
        space: the (narrowed) search space; its names are settings of the spec.
        objective, direction: what the tuner optimises.
    """

    train_options: dict = {}

    def __init__(self, name, experiment, base: Spec, space: Space, objective, direction):
        super().__init__(name=name)
        self.experiment = experiment
        self.base = base
        self.space = space
        self.objective = objective
        self.direction = direction
        self._data = {}

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def trial_spec(self, hp) -> Spec:
        return self.base.replace(**self.space.declare(hp))

    def data_key(self, spec: Spec):
        """Trials whose data are the same share one loaded copy."""
        return ()

    def load_data(self, spec: Spec):
        raise NotImplementedError

    def data_for(self, spec: Spec):
        key = self.data_key(spec)
        if key not in self._data:
            self._data[key] = self.load_data(spec)
        return self._data[key]

    def load(self) -> None:
        """Loads the data (once per process, before the first trial)."""
        self.data_for(self.base)

    def build(self, hp):
        spec = self.trial_spec(hp)
        data = self.data_for(spec)
        spec = self.experiment.resolved(spec, data)
        return compile_for_training(
            lambda: self.experiment.build_model(spec, data), spec, self.steps_per_epoch(data, spec)
        )

    def steps_per_epoch(self, data, spec) -> int:
        raise NotImplementedError

    def fit(self, hp, model, *args, epochs, initial_epoch=0, callbacks=(), trial_dir, **_):
        spec = self.trial_spec(hp)
        try:
            self.experiment.train(
                spec,
                self.data_for(spec),
                trial_dir,
                model=model,
                initial_epoch=initial_epoch,
                until_epoch=epochs,
                extra_callbacks=list(callbacks),
                progress_bar=False,
                **self.train_options,
            )
        except TrainingDiverged as err:  # a failed trial; the search goes on
            raise kt.errors.FailedTrialError(str(err)) from None
        return best_epoch_metrics(trial_dir, self.objective, self.direction)


class ImageHyperModel(ExperimentHyperModel):
    """The image experiment, as in train_image.py, except that a trial never sees the test
    split (a search chooses among its trials)."""

    train_options = dict(evaluate_test=False)

    def __init__(self, base: ImageExperiment, space: Space, objective, direction):
        super().__init__("image", image_experiment, base, space, objective, direction)

    def load_data(self, spec):
        return image_experiment.load_data(spec)

    def steps_per_epoch(self, data, spec):
        return image_steps_per_epoch(data, spec.batch_size)


class VideoHyperModel(ExperimentHyperModel):
    """The video experiment on cached frozen features, as in train_video.py, except that a
    trial never sees the test split (a search chooses among its trials)."""

    train_options = dict(evaluate_test=False)

    def __init__(self, base: VideoExperiment, space: Space, objective, direction):
        super().__init__("video", video_experiment, base, space, objective, direction)

    def data_key(self, spec):
        return (spec.num_frames, spec.frame_attention != "none")

    def load_data(self, spec):
        return video_experiment.load_video_data(spec)

    def steps_per_epoch(self, data, spec):
        return data.inputs.steps_per_epoch
