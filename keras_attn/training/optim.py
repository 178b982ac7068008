"""Optimizer, learning-rate schedule and loss from a TrainingSpec."""

from __future__ import annotations

import keras

from keras_attn.training.config import TrainingSpec


def make_schedule(cfg: TrainingSpec, steps_per_epoch: int):
    """A float or a `LearningRateSchedule` stepping once per batch."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            cfg.lr, cfg.step_epochs * steps_per_epoch, cfg.step_gamma, staircase=True
        )
    # Capped so a short run (--epochs 1 with the default warmup) still decays.
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total // 2)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=total)
    # CosineDecay counts decay_steps after the warmup, so the two add up to the run.
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total - warmup), warmup_target=cfg.lr, warmup_steps=warmup
    )


def make_optimizer(cfg: TrainingSpec, steps_per_epoch: int, model: keras.Model):
    """The optimizer, with no weight decay on biases and normalisation parameters.

    Biases, BatchNorm/LayerNorm scales and offsets are exactly the 1-D trainable
    variables, which is what `exclude_from_weight_decay` is given.
    """
    schedule = make_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        optimizer = keras.optimizers.Adam(schedule)
    else:
        optimizer = keras.optimizers.SGD(
            schedule, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay or None
        )
    if cfg.optimizer != "adam" and cfg.weight_decay:
        no_decay = [v for v in model.trainable_variables if len(v.shape) <= 1]
        optimizer.exclude_from_weight_decay(var_list=no_decay)
    return optimizer


def make_loss(cfg: TrainingSpec):
    """Loss on one-hot targets and logits (label smoothing needs one-hot targets)."""
    if cfg.loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(
            gamma=cfg.focal_gamma, from_logits=True, label_smoothing=cfg.label_smoothing
        )
    return keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=cfg.label_smoothing
    )
