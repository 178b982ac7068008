"""Mixed precision and XLA: on where the hardware gains from them, off where they cost.

`auto` turns both on when TensorFlow sees a GPU and off otherwise: on CPU, float16
math is emulated, and XLA made the original study's model slower on 2 cores (0.68x-0.78x,
`benchmarks/seed_model.py`, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

SETTINGS = ("auto", "on", "off")


def _has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve(setting: str) -> bool:
    """`auto` | `on` | `off` -> whether to use it on this machine."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting '{setting}'; valid: {', '.join(SETTINGS)}")
    return _has_gpu() if setting == "auto" else setting == "on"


@contextlib.contextmanager
def precision_policy(mixed: bool):
    """Builds the layers made inside with float16 compute and float32 variables, if `mixed`."""
    previous = keras.config.dtype_policy()
    if mixed:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_logits(model: keras.Model) -> keras.Model:
    """The same model with its output cast to float32, so the loss and softmax are computed
    in float32 under mixed precision (a float16 softmax over logits can overflow)."""
    if model.output.dtype == "float32":
        return model
    logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(model.output)
    return keras.Model(model.input, logits, name=model.name)
