"""Mixed precision and XLA: on where the hardware gains from them, off where they cost.

`--mixed-precision auto` resolves, once per spec, to the policy this machine gains from:
`on` (float16 compute) with a GPU; `bf16` (bfloat16 compute) on a CPU with bfloat16 units
(AMX or AVX512-BF16), where the default image run trains about 1.5x faster with its accuracy
not below float32's (benchmarks/RESULTS.md sections 15 and 16), unless the experiment says
bf16 does not pay for it (video runs); `off` (float32) otherwise: on CPU without those units
float16 and bfloat16 math are emulated. The resolved value is what a run's `config.json` and
name record, so a run resumed on another machine keeps its precision.
`--jit-compile auto` turns XLA on with a GPU only: it made the original study's model
slower on 2 cores (0.68x-0.78x, `benchmarks/seed_model.py`, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import keras
import tensorflow as tf

SETTINGS = ("auto", "on", "off")
PRECISIONS = ("auto", "on", "bf16", "off")
# Each concrete --mixed-precision value and the Keras dtype policy it builds layers with.
POLICIES = {"on": "mixed_float16", "bf16": "mixed_bfloat16", "off": "float32"}
# The CPU flags of bfloat16 units; auto picks bf16 with either. The default image run
# (3 seeds, float32 against bf16) trained 1.52x faster with AMX (RESULTS.md section 15) and
# 1.49x with AVX512-BF16 alone (a Zen 4 host, section 16), its accuracy not lower in both.
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def _has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


@functools.cache
def cpu_bfloat16_units(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The bfloat16 flags of this machine's CPU (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return tuple(f for f in BFLOAT16_FLAGS if f in flags)


def resolve(setting: str) -> bool:
    """`--jit-compile` `auto` | `on` | `off` -> whether to use it on this machine."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting '{setting}'; valid: {', '.join(SETTINGS)}")
    return _has_gpu() if setting == "auto" else setting == "on"


def resolve_precision(setting: str, bf16_pays: bool) -> tuple[str, str]:
    """`--mixed-precision` -> (`on` | `bf16` | `off`, why, in a few words); `bf16_pays`:
    whether the experiment gains from bfloat16 on a CPU with bfloat16 units (the spec's
    `BF16_PAYS_ON_CPU`)."""
    if setting not in PRECISIONS:
        raise ValueError(f"unknown precision '{setting}'; valid: {', '.join(PRECISIONS)}")
    if setting != "auto":
        return setting, "as asked"
    return auto_precision(_has_gpu(), cpu_bfloat16_units(), bf16_pays)


def auto_precision(has_gpu: bool, units: tuple[str, ...], bf16_pays: bool) -> tuple[str, str]:
    """What `auto` resolves to with or without a GPU and with these CPU bfloat16 `units`."""
    if has_gpu:
        return "on", "a GPU: float16 compute"
    if units and bf16_pays:
        return "bf16", f"no GPU; a CPU with {' and '.join(units)}: bfloat16 compute"
    if units:
        return "off", (
            f"no GPU; the CPU's {' and '.join(units)} would run bf16, "
            "but it does not pay for this experiment"
        )
    return "off", "no GPU and no bfloat16 units on the CPU: float32"


def precision_line(setting: str, bf16_pays: bool) -> str:
    """The one line a run prints about its precision, saying when it is auto's choice.

    `setting` is the resolved one (a spec resolves `auto` when it is made), so the line
    cannot tell `auto` from an explicit choice that equals it, and words it for both."""
    precision, why = resolve_precision(setting, bf16_pays)
    auto, auto_why = resolve_precision("auto", bf16_pays)
    where = f"what auto picks here: {auto_why}" if precision == auto else "as asked"
    return f"Precision: {POLICIES[precision]} ({where})"


@contextlib.contextmanager
def precision_policy(precision: str | bool):
    """Builds the layers made inside with the policy of `precision` (`on`, `bf16`, `off`;
    True means `on`): float16 or bfloat16 compute with float32 variables, or float32."""
    if isinstance(precision, bool):
        precision = "on" if precision else "off"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_logits(model: keras.Model) -> keras.Model:
    """The same model with its output cast to float32, so the loss and softmax are computed
    in float32 under mixed precision (a float16 softmax over logits can overflow, and
    bfloat16 keeps only 8 bits of mantissa)."""
    if model.output.dtype == "float32":
        return model
    logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(model.output)
    return keras.Model(model.input, logits, name=model.name)
