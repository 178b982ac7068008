"""--mixed-precision and --jit-compile: checked for correctness on CPU."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from keras_attn.experiments.image import ImageExperiment
from keras_attn.experiments.video import VideoExperiment
from keras_attn.layers import attention_names
from keras_attn.models.image import build_image_model
from keras_attn.training import acceleration
from keras_attn.training.config import TrainingSpec
from keras_attn.training.run import run_training


def test_auto_is_off_without_a_gpu_and_bad_settings_are_refused():
    assert not tf.config.list_physical_devices("GPU")  # this machine; CI too
    assert acceleration.resolve("auto") is False
    assert acceleration.resolve("on") is True and acceleration.resolve("off") is False
    with pytest.raises(ValueError, match="unknown setting 'fast'"):
        acceleration.resolve("fast")
    with pytest.raises(ValueError, match="unknown jit compile 'yes'; valid: auto, on, off"):
        TrainingSpec(jit_compile="yes").validate()
    with pytest.raises(ValueError, match="unknown mixed precision 'fp8'; valid: auto, on, bf16"):
        TrainingSpec(mixed_precision="fp8").validate()


def test_the_cpu_flags_that_mean_bfloat16_units_are_read_from_cpuinfo(tmp_path):
    amx = tmp_path / "amx"
    amx.write_text(
        "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n"
    )
    zen = tmp_path / "zen"
    zen.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    old = tmp_path / "old"
    old.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert acceleration.cpu_bfloat16_units(str(amx)) == ("amx_bf16", "avx512_bf16")
    assert acceleration.cpu_bfloat16_units(str(zen)) == ("avx512_bf16",)
    assert acceleration.cpu_bfloat16_units(str(old)) == ()
    assert acceleration.cpu_bfloat16_units(str(tmp_path / "absent")) == ()


def test_auto_picks_bfloat16_on_a_cpu_with_bfloat16_units_for_image_runs():
    auto = acceleration.auto_precision
    assert auto(True, ("amx_bf16", "avx512_bf16"), True) == ("on", "a GPU: float16 compute")
    precision, why = auto(False, ("amx_bf16", "avx512_bf16"), True)
    assert precision == "bf16" and "amx_bf16 and avx512_bf16" in why
    precision, why = auto(False, ("avx512_bf16",), True)
    assert precision == "bf16" and why == "no GPU; a CPU with avx512_bf16: bfloat16 compute"
    assert auto(False, (), True) == ("off", "no GPU and no bfloat16 units on the CPU: float32")
    # Video runs did not gain from bf16 with either unit: auto stays float32 for them.
    for units in (("amx_bf16",), ("avx512_bf16",)):
        precision, why = auto(False, units, bf16_pays=False)
        assert precision == "off" and why.endswith("but it does not pay for this experiment")
    assert ImageExperiment.BF16_PAYS_ON_CPU and not VideoExperiment.BF16_PAYS_ON_CPU
    assert VideoExperiment().mixed_precision == "off"  # no GPU here
    assert VideoExperiment(mixed_precision="bf16").mixed_precision == "bf16"


def test_a_spec_holds_what_auto_resolved_to_so_the_run_records_its_precision():
    here, why = acceleration.resolve_precision("auto", TrainingSpec.BF16_PAYS_ON_CPU)
    units = acceleration.cpu_bfloat16_units()
    assert here == ("bf16" if units else "off")  # no GPU here
    assert all(unit in why for unit in units)  # the line says what the CPU has
    spec = TrainingSpec()
    assert spec.mixed_precision == here and spec.config()["mixed_precision"] == here
    assert spec.replace(lr=1e-3).mixed_precision == here
    # An explicit choice is kept, and it is part of what names the run.
    for choice in ("on", "bf16", "off"):
        assert TrainingSpec(mixed_precision=choice).mixed_precision == choice
    assert (
        TrainingSpec(mixed_precision="off").run_name()
        != TrainingSpec(mixed_precision="bf16").run_name()
    )
    # A config.json from before auto was resolved reads back as what it computed in then.
    assert TrainingSpec.upgrade({"mixed_precision": "auto"}) == {"mixed_precision": "off"}
    line = acceleration.precision_line(here, TrainingSpec.BF16_PAYS_ON_CPU)
    assert line.startswith(f"Precision: {acceleration.POLICIES[here]} ")
    assert "what auto picks here" in line
    assert acceleration.precision_line("on", True).endswith("as asked)") or here == "on"


@pytest.mark.parametrize("attention", attention_names())
def test_every_attention_gives_the_float32_logits_in_mixed_precision(attention):
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    full = build_image_model(3, 32, attention=attention, seed=0)
    with acceleration.precision_policy(True):
        mixed = acceleration.float32_logits(build_image_model(3, 32, attention=attention, seed=0))
    assert keras.config.dtype_policy().name == "float32"  # restored after the build
    assert mixed.get_layer("stage1_conv1").compute_dtype == "float16"
    assert mixed.output.dtype == "float32"
    mixed.set_weights(full.get_weights())  # the variables stay float32 in both
    expected = full.predict(images, verbose=0)
    got = mixed.predict(images, verbose=0)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max() + 1e-2)


def _run(tmp_path, name, **cfg):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (48, 32, 32, 3)).astype("float32")
    y = (x[:, :16].mean(axis=(1, 2, 3)) > x[:, 16:].mean(axis=(1, 2, 3))).astype("int32")

    def train_data(start, end):
        one = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        return tf.data.Dataset.range(start, end).flat_map(lambda _: one)

    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    config = TrainingSpec(epochs=2, batch_size=16, lr=1e-3, **cfg)
    run_training(
        # No dropout: XLA draws other random masks, which is not what is compared here.
        lambda: build_image_model(2, 32, attention="cbam", seed=0, dropout=0.0),
        train_data,
        val,
        3,
        config,
        tmp_path / name,
    )
    return pd.read_csv(tmp_path / name / "history.csv"), tmp_path / name / "best.keras"


@pytest.mark.slow
def test_mixed_precision_and_xla_runs_train_like_the_default_one(tmp_path):
    default, _ = _run(tmp_path, "default", mixed_precision="off", jit_compile="off")
    xla, _ = _run(tmp_path, "xla", mixed_precision="off", jit_compile="on")
    mixed, best = _run(tmp_path, "mixed", mixed_precision="on", jit_compile="off")
    # XLA fuses the same float32 math differently: equal up to rounding.
    np.testing.assert_allclose(xla["loss"], default["loss"], rtol=1e-3)
    # float16 activations: close, not equal; the gradient norm is unscaled (not x loss scale).
    np.testing.assert_allclose(mixed["loss"], default["loss"], rtol=0.03)
    np.testing.assert_allclose(mixed["grad_norm_mean"], default["grad_norm_mean"], rtol=0.1)
    model = keras.saving.load_model(best)
    assert model.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    # bfloat16 keeps 8 bits of mantissa: close to float32, further than float16.
    bf16, best = _run(tmp_path, "bf16", mixed_precision="bf16", jit_compile="off")
    np.testing.assert_allclose(bf16["loss"], default["loss"], rtol=0.06)
    np.testing.assert_allclose(bf16["grad_norm_mean"], default["grad_norm_mean"], rtol=0.2)
    summary = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert summary["precision"] == "mixed_bfloat16"
    assert summary["intra_op_threads"] >= 1
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["mixed_precision"] == "bf16"
    model = keras.saving.load_model(best)
    assert model.get_layer("stage1_conv1").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
