"""Data-parallel training on one machine.

Only `tf.distribute.MirroredStrategy` is offered: `MultiWorkerMirroredStrategy`
fails inside `fit` on Keras 3.15 (keras-team/keras#20585), so scale-out across
machines goes through the distributed tuner instead.
"""

from __future__ import annotations

import tensorflow as tf

from keras_attn.errors import UserError

STRATEGIES = ("auto", "mirrored", "none")


def distribution_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """`auto`: mirrored over several GPUs, else none; `mirrored`: over all GPUs, or over
    the logical CPU devices when there is no GPU (which makes it testable on a CPU)."""
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy '{name}'; valid: {', '.join(STRATEGIES)}")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "none"
    if name == "none":
        return tf.distribute.get_strategy()
    devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        raise UserError(f"--strategy mirrored needs two or more devices; found {devices}")
    return tf.distribute.MirroredStrategy(devices)
