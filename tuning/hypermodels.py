"""Keras Tuner HyperModels for the image and video experiments.

They call the training scripts' own builders (`keras_attn.data.*`,
`keras_attn.models.*`, `keras_attn.training.optim`); nothing here builds a layer.
Each process loads its data once (lazily: a distributed chief never needs it), and
the video experiment prepares the frozen-feature inputs once per distinct number
of frames and feature kind, from the on-disk feature cache when it can.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import keras_tuner as kt
import tensorflow as tf

from keras_attn.data import images
from keras_attn.data.synthetic_video import ensure_synthetic_videos
from keras_attn.data.wlasl import load_wlasl
from keras_attn.experiments.video import prepare_video_inputs
from keras_attn.layers import ATTENTION, TEMPORAL, attention_names, temporal_names
from keras_attn.models.image import build_image_model
from keras_attn.models.video import FRAME_ATTENTION, build_video_head
from keras_attn.training.callbacks import EpochLine, LearningRateLogger
from keras_attn.training.config import TrainConfig
from keras_attn.training.files import atomic_save_model
from keras_attn.training.optim import make_loss, make_optimizer
from tuning.space import Param, Space, accepting

# The optimisation parameters both experiments search (defaults: the training scripts').
_LR = dict(low=1e-4, high=1e-2, log=True, help="peak learning rate")
_WD = dict(low=1e-6, high=1e-2, log=True, help="decoupled weight decay")
_LS = dict(low=0.0, high=0.2, step=0.05, ceiling=1.0, help="label smoothing")
_DROPOUT = dict(low=0.0, high=0.5, step=0.1, ceiling=1.0, help="dropout before the classifier")

IMAGE_SPACE = Space(
    [
        Param(
            "attention",
            "attention block",
            "cbam",
            values=tuple(attention_names()),
        ),
        Param(
            "reduction",
            "channel attention reduction ratio",
            8,
            values=(4, 8, 16),
            floor=1,
            parent="attention",
            when=accepting(ATTENTION, "reduction"),
        ),
        Param(
            "kernel_size",
            "spatial attention kernel size",
            7,
            values=(3, 5, 7),
            floor=1,
            parent="attention",
            when=accepting(ATTENTION, "kernel_size"),
        ),
        Param("lr", default=2e-3, **_LR),
        Param("weight_decay", default=5e-4, **_WD),
        Param("label_smoothing", default=0.1, **_LS),
        Param("dropout", default=0.2, **_DROPOUT),
    ]
)

VIDEO_SPACE = Space(
    [
        Param("num_frames", "frames sampled per clip", 8, values=(4, 8), floor=1),
        Param(
            "frame_attention",
            "spatial attention on each frame's feature map",
            "none",
            values=FRAME_ATTENTION,
        ),
        Param("temporal", "temporal module", "tcn", values=tuple(temporal_names())),
        Param(
            "temporal_pool",
            "how the TCN pools frames",
            "attention",
            values=("attention", "avg", "max", "last"),
            parent="temporal",
            when=accepting(TEMPORAL, "pool"),
        ),
        Param("width", "per-frame projection and TCN width", 128, values=(64, 128, 256), floor=1),
        Param(
            "tcn_kernel",
            "TCN kernel size",
            3,
            values=(2, 3, 5),
            floor=1,
            parent="temporal",
            when=accepting(TEMPORAL, "kernel_size"),
        ),
        Param(
            "tcn_levels",
            "TCN blocks, dilations 1, 2, ..., 2^(levels-1)",
            3,
            values=(2, 3, 4),
            floor=1,
            parent="temporal",
            when=accepting(TEMPORAL, "dilations"),
        ),
        Param("lr", default=1e-3, **_LR),
        Param("weight_decay", default=1e-4, **_WD),
        Param("label_smoothing", default=0.0, **_LS),
        Param("dropout", default=0.5, **{**_DROPOUT, "high": 0.6}),
    ]
)

# Settings of a TrainConfig that the command line gives (the searched ones come from hp).
TRAIN_SETTINGS = ("batch_size", "optimizer", "schedule", "warmup_epochs", "loss", "seed")
SEARCHED_TRAINING = ("lr", "weight_decay", "label_smoothing")


class SaveBestModel(keras.callbacks.Callback):
    """Saves the whole model to `path` (atomically) whenever `monitor` improves.

    Plain attributes only, so Keras Tuner can deep-copy it like any callback.
    """

    def __init__(self, path, monitor="val_accuracy", mode="max"):
        super().__init__()
        self.path = str(path)
        self.monitor = monitor
        self.mode = mode
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or math.isnan(value):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = float(value)
            atomic_save_model(self.model, self.path)


class ExperimentHyperModel(kt.HyperModel):
    """What both experiments share: declare the space, build and compile, fit one trial.

    Args:
        space: the (narrowed) search space.
        settings: resolved command-line settings: data flags, the TrainConfig fields in
            `TRAIN_SETTINGS`, `schedule_epochs` (the learning-rate schedule's length),
            `early_stopping`, `objective` and `direction`.
    """

    def __init__(self, name: str, space: Space, settings: dict):
        super().__init__(name=name)
        self.space = space
        self.settings = settings

    # Subclasses: the data a trial with these values trains on, and its model.
    def load(self) -> None:
        """Loads the data (once per process)."""
        raise NotImplementedError

    def datasets(self, values: dict):
        """`(train(start_epoch, epochs), val, steps_per_epoch)`, yielding int labels."""
        raise NotImplementedError

    def steps_per_epoch(self, values: dict) -> int:
        raise NotImplementedError

    def build_model(self, values: dict) -> keras.Model:
        raise NotImplementedError

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def train_config(self, values: dict) -> TrainConfig:
        fields = {k: self.settings[k] for k in TRAIN_SETTINGS if self.settings.get(k) is not None}
        fields.update({k: values[k] for k in SEARCHED_TRAINING if k in values})
        return TrainConfig(epochs=self.settings["schedule_epochs"], **fields)

    def build(self, hp):
        values = self.space.declare(hp)
        steps = self.steps_per_epoch(values)  # first: preparing inputs may seed too
        cfg = self.train_config(values)
        keras.utils.set_random_seed(cfg.seed)
        model = self.build_model(values)
        model.compile(
            optimizer=make_optimizer(cfg, steps, model),
            loss=make_loss(cfg),
            metrics=["accuracy"],
        )
        return model

    def fit(self, hp, model, *args, epochs, initial_epoch=0, callbacks=(), trial_dir, log_dir, **_):
        values = self.space.declare(hp)
        train, val, steps = self.datasets(values)
        if initial_epoch:  # Hyperband continues a trial: the schedule continues too
            model.optimizer.iterations.assign(initial_epoch * steps)
        num_classes = int(model.output.shape[-1])

        def one_hot(x, y):  # the losses take one-hot targets (label smoothing)
            return x, tf.one_hot(y, num_classes)

        objective, direction = self.settings["objective"], self.settings["direction"]
        own = [
            keras.callbacks.TerminateOnNaN(),
            LearningRateLogger(),  # before the callbacks that read the logs
            keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0),
            SaveBestModel(Path(trial_dir) / "best.keras", objective, direction),
            EpochLine(epochs),
        ]
        if self.settings.get("early_stopping"):
            own.append(
                keras.callbacks.EarlyStopping(
                    objective, mode=direction, patience=self.settings["early_stopping"]
                )
            )
        return model.fit(
            train(initial_epoch, epochs).map(one_hot),
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=val.map(one_hot),
            callbacks=[*own, *callbacks],
            verbose=0,
            shuffle=False,  # the datasets fix the order per seed and epoch
        )


class ImageHyperModel(ExperimentHyperModel):
    """The image experiment: `build_image_model` on `load_image_data`, as in train_image.py."""

    def __init__(self, space: Space, settings: dict):
        super().__init__("image", space, settings)
        self._data = None
        self._val = None

    def load(self):
        if self._data is None:
            s = self.settings
            self._data = images.load_image_data(
                s["data"],
                s["data_dir"],
                s["image_size"],
                seed=s["seed"],
                val_fraction=s["val_fraction"],
                train_per_class=s["synthetic_per_class"],
            )
            d = self._data
            print(
                f"{d.source}: {len(d.class_names)} classes, {d.num_train} train / {d.num_val} "
                f"val images at {d.image_size}x{d.image_size}, "
                f"{len(d.skipped_files)} unreadable files skipped",
                flush=True,
            )
        return self._data

    def datasets(self, values):
        data, batch, seed = self.load(), self.settings["batch_size"], self.settings["seed"]
        if self._val is None:
            self._val = images.val_dataset(data, batch)
        return (
            lambda start, end: images.train_dataset(data, batch, seed, start, end),
            self._val,
            self.steps_per_epoch(values),
        )

    def steps_per_epoch(self, values):
        return images.steps_per_epoch(self.load(), self.settings["batch_size"])

    def build_model(self, values):
        data, s = self.load(), self.settings
        return build_image_model(
            len(data.class_names),
            data.image_size,
            backbone=s["backbone"],
            attention=values["attention"],
            weights=s["backbone_weights"],
            trainable_backbone=s["fine_tune"],
            dropout=values["dropout"],
            seed=s["seed"],
            attention_options={k: values[k] for k in ("reduction", "kernel_size") if k in values},
        )


class VideoHyperModel(ExperimentHyperModel):
    """The video experiment: a temporal head on cached frozen features, as in train_video.py."""

    def __init__(self, space: Space, settings: dict):
        super().__init__("video", space, settings)
        self._index = None
        self._inputs = {}

    @property
    def image_size(self) -> int:
        return self.settings["image_size"] or (224 if self.settings["data_dir"] else 96)

    def load(self):
        if self._index is None:
            s = self.settings
            data_dir = s["data_dir"] or ensure_synthetic_videos(
                clips_per_class=s["synthetic_clips_per_class"]
            )
            self._index = load_wlasl(
                data_dir, s["val_split"], s["limit_classes"] or None, s["class_order"]
            )
            print(self._index.summary_line(), flush=True)
        return self._index

    def inputs(self, values):
        """The frozen-feature inputs for this trial's frames and feature kind (memoised)."""
        key = (values["num_frames"], values["frame_attention"] != "none")
        if key not in self._inputs:
            s = self.settings
            self._inputs[key] = prepare_video_inputs(
                self.load(),
                key[0],
                s["sampling"],
                self.image_size,
                s["backbone"],
                s["backbone_weights"],
                feature_maps=key[1],
                crop_bbox=s["crop_bbox"],
                feature_cache=True,
                cache_dir=s["cache_dir"],
                batch_size=s["batch_size"],
                seed=s["seed"],
            )
        return self._inputs[key]

    def datasets(self, values):
        inputs = self.inputs(values)
        return inputs.train, inputs.val, inputs.steps_per_epoch

    def steps_per_epoch(self, values):
        return self.inputs(values).steps_per_epoch

    def build_model(self, values):
        inputs = self.inputs(values)
        options = dict(filters=values["width"])
        if "temporal_pool" in values:
            options["pool"] = values["temporal_pool"]
        if "tcn_kernel" in values:
            options["kernel_size"] = values["tcn_kernel"]
        if "tcn_levels" in values:
            options["dilations"] = tuple(2**i for i in range(values["tcn_levels"]))
        head = build_video_head(
            inputs.feature_shape,
            values["num_frames"],
            len(self.load().class_names),
            temporal=values["temporal"],
            frame_attention=values["frame_attention"],
            width=values["width"],
            dropout=values["dropout"],
            seed=self.settings["seed"],
            temporal_options=options,
        )
        return inputs.wrap_head(head)
