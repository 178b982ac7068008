"""The training settings shared by the image and video experiments, the tuner and the study."""

from __future__ import annotations

import dataclasses

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
LOSSES = ("crossentropy", "focal")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation settings of one run; everything a run directory's resume depends on.

    The defaults are the original study's image settings (AdamW 3e-4, weight
    decay 1e-4, label smoothing 0.1, cosine schedule, seed 42 via `--preset seed`).
    """

    epochs: int = 100
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 3e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    schedule: str = "cosine"
    warmup_epochs: float = 0.0  # capped at half the run
    step_epochs: int = 30  # "step" schedule: multiply by step_gamma every step_epochs
    step_gamma: float = 0.1
    label_smoothing: float = 0.1
    loss: str = "crossentropy"
    focal_gamma: float = 2.0
    seed: int = 0
    deterministic: bool = False
    early_stopping: int = 0  # patience in epochs on val_accuracy; 0 = off
    # Training steps per call into TensorFlow: >1 cuts Keras' per-step Python overhead,
    # which dominates small models (the video head on cached features).
    steps_per_execution: int = 1
    jit_compile: str = "auto"  # auto | on | off: XLA; auto = on with a GPU
    mixed_precision: str = "auto"  # auto | on | off: float16 compute; auto = on with a GPU
    strategy: str = "none"  # auto | mirrored | none, see training/distribute.py

    def validate(self) -> None:
        """Raises ValueError with one line for the first setting that cannot work."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.lr > 0, f"--lr must be positive (got {self.lr})"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0 (got {self.weight_decay})"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
            (
                self.optimizer in OPTIMIZERS,
                f"unknown optimizer '{self.optimizer}'; valid: " + ", ".join(OPTIMIZERS),
            ),
            (
                self.schedule in SCHEDULES,
                f"unknown schedule '{self.schedule}'; valid: " + ", ".join(SCHEDULES),
            ),
            (self.loss in LOSSES, f"unknown loss '{self.loss}'; valid: " + ", ".join(LOSSES)),
            (self.early_stopping >= 0, "--early-stopping must be >= 0"),
            (self.step_epochs >= 1, "--step-epochs must be at least 1"),
            (self.steps_per_execution >= 1, "--steps-per-execution must be at least 1"),
            (self.jit_compile in ("auto", "on", "off"), "--jit-compile must be auto, on or off"),
            (
                self.mixed_precision in ("auto", "on", "off"),
                "--mixed-precision must be auto, on or off",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
