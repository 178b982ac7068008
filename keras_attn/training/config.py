"""The training settings every experiment spec shares (and the trainer reads).

`TrainingSpec` declares the optimisation, precision and run-directory settings once;
`ImageExperiment` and `VideoExperiment` extend it with their data and model settings
and give some of these their own defaults (`like`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from keras_attn.spec import Spec, at_least, fraction, non_negative, positive, setting
from keras_attn.training import acceleration
from keras_attn.training.distribute import STRATEGIES

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
LOSSES = ("crossentropy", "focal")
AUTO_ON_OFF = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class TrainingSpec(Spec):
    """Optimisation settings of one run; everything a run directory's resume depends on.

    The defaults are the original study's image settings (AdamW 3e-4, weight decay
    1e-4, label smoothing 0.1, cosine schedule); each experiment sets its own.
    """

    # Whether `--mixed-precision auto` picks bf16 on a CPU with bfloat16 units for this
    # experiment: it trains the default image run about 1.5x faster there (benchmarks/
    # RESULTS.md sections 15 and 16). Not a setting: a fact about the experiment, measured.
    BF16_PAYS_ON_CPU: ClassVar[bool] = True

    epochs: int = setting(100, "epochs to train", check=at_least(1))
    batch_size: int = setting(128, "examples per training step", check=at_least(1))
    optimizer: str = setting("adamw", "optimizer", choices=OPTIMIZERS)
    lr: float = setting(3e-4, "peak learning rate", check=positive)
    weight_decay: float = setting(
        1e-4, "decoupled weight decay; not on biases or norms", check=non_negative
    )
    momentum: float = setting(0.9, "SGD's Nesterov momentum", check=fraction)
    schedule: str = setting("cosine", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = setting(
        0.0, "linear warmup before the cosine decay (capped at half the run)", check=non_negative
    )
    step_epochs: int = setting(
        30, "step schedule: multiply the rate by --step-gamma every N epochs", check=at_least(1)
    )
    step_gamma: float = setting(0.1, "step schedule: the factor", check=positive)
    label_smoothing: float = setting(0.1, "label smoothing of the targets", check=fraction)
    loss: str = setting("crossentropy", "loss", choices=LOSSES)
    focal_gamma: float = setting(2.0, "focal loss: the focusing exponent", check=non_negative)
    seed: int = setting(0, "data order, augmentation and initial weights")
    deterministic: bool = setting(False, "turn on TensorFlow op determinism (slower)")
    early_stopping: int = setting(
        0,
        "stop after N epochs without a better --early-stopping-on (0: off)",
        metavar="N",
        check=non_negative,
    )
    early_stopping_on: str = setting(
        "val_accuracy",
        "what --early-stopping watches (best.keras is always the best val accuracy)",
        choices=("val_accuracy", "val_loss"),
    )
    # Keras' start_from_epoch. BatchNorm's moving statistics lag far behind the weights
    # while the rate is high (val losses of 10-1000 in the first epochs of a 32-step
    # epoch at lr 0.02), so an early epoch at chance can stay the "best" for good.
    early_stopping_start: int = setting(
        0,
        "epochs --early-stopping does not watch before it starts counting",
        metavar="N",
        check=non_negative,
    )
    strategy: str = setting(
        "none", "mirrored: data-parallel over this machine's GPUs", choices=STRATEGIES
    )
    # >1 cuts Keras' per-step Python overhead, which dominates small models.
    steps_per_execution: int = setting(
        1,
        "training steps per call into TensorFlow (less Python overhead per step)",
        metavar="N",
        check=at_least(1),
    )
    mixed_precision: str = setting(
        "auto",
        "on: float16 compute, bf16: bfloat16 compute (float32 weights both), off: float32; "
        "auto: on with a GPU, bf16 on a CPU with AMX or AVX512-BF16 for image runs (video "
        "runs do not gain from it), else off (a run records what auto resolved to)",
        choices=acceleration.PRECISIONS,
    )
    jit_compile: str = setting("auto", "XLA; auto: on with a GPU", choices=AUTO_ON_OFF)
    run_dir: str | None = setting(
        None,
        "where the run's files go (default: runs/<kind>/<name>)",
        group="run",
        in_config=False,
    )
    overwrite: bool = setting(
        False,
        "replace an existing run directory instead of resuming it",
        group="run",
        in_config=False,
    )

    def __post_init__(self):
        # `auto` becomes this machine's choice once, here, so config.json, the run name
        # and every cache key say which precision a run computed in.
        if self.mixed_precision == "auto":
            resolved, _ = acceleration.resolve_precision("auto", self.BF16_PAYS_ON_CPU)
            object.__setattr__(self, "mixed_precision", resolved)

    @classmethod
    def upgrade(cls, values: dict) -> dict:
        values = super().upgrade(values)
        if values.get("mixed_precision") == "auto":
            # Written before auto was resolved per spec, when it meant float16 with a GPU
            # and float32 without: a run from then resumes as what it computed in.
            has_gpu = acceleration.resolve("auto")
            values = {**values, "mixed_precision": "on" if has_gpu else "off"}
        return values
