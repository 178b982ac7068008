"""Video models: frozen encoder, BatchNorm calibration, head, cached == uncached logits, maps.

Backend-neutral (numpy and keras.ops only): CI also runs this file with KERAS_BACKEND=jax.
"""

import logging

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.errors import UserError
from keras_attn.layers import temporal_names
from keras_attn.models import attention_model
from keras_attn.models.video import (
    build_frame_encoder,
    build_video_head,
    build_video_model,
    calibrate_batchnorm,
)

SIZE, T = 32, 4
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)


def _frames(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def test_random_encoder_features_vanish_until_batchnorm_is_calibrated():
    encoder, used = build_frame_encoder("mobilenet_v2", SIZE, "none")
    assert used == "random" and not encoder.trainable_weights
    frames = _frames(16)
    before = encoder.predict(frames, verbose=0)
    assert before.shape == (16, 1280) and before.std() < 1e-6
    calibrate_batchnorm(encoder, frames)
    after = encoder.predict(_frames(16, seed=1), verbose=0)
    assert after.std() > 1e-2  # usable by a head
    assert not encoder.trainable_weights  # still frozen afterwards


def test_auto_weights_offline_fall_back_to_random_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with caplog.at_level(logging.WARNING):
        encoder, used = build_frame_encoder("mobilenet_v2", SIZE, "auto")
    assert used == "random"
    assert "RANDOM" in caplog.text
    with pytest.raises(UserError, match="not cached"):
        build_frame_encoder("mobilenet_v2", SIZE, "imagenet")


@pytest.mark.parametrize("temporal", temporal_names())
def test_every_temporal_head_gives_logits_and_its_frame_weights(temporal):
    head = build_video_head((24,), T, 5, temporal=temporal, width=16, seed=0)
    x = np.random.default_rng(0).normal(size=(3, T, 24)).astype("float32")
    logits = head.predict([x, MASK], verbose=0)
    assert logits.shape == (3, 5) and np.isfinite(logits).all()
    outputs = attention_model(head).predict([x, MASK], verbose=0)
    assert set(outputs) == {"logits", "temporal_weights"}
    np.testing.assert_array_equal(outputs["logits"], logits)
    weights = outputs["temporal_weights"]
    assert weights.shape == (3, T) and np.all(weights[~MASK] == 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)


def test_frame_maps_and_weights_survive_a_keras_file(tmp_path):
    head = build_video_head((3, 3, 16), T, 2, temporal="attention", frame_attention="spatial")
    x = np.random.default_rng(1).normal(size=(3, T, 3, 3, 16)).astype("float32")
    sibling = attention_model(head)
    # The temporal module's own second output: the graph's tensor, not a copy's.
    assert sibling.output["temporal_weights"] is head.get_layer("temporal").output[1]
    before = sibling.predict([x, MASK], verbose=0)
    assert before["frame_maps"].shape == (3, T, 3, 3, 1)
    assert before["frame_maps"].min() >= 0 and before["frame_maps"].max() <= 1
    head.save(tmp_path / "best.keras")
    loaded = keras.saving.load_model(tmp_path / "best.keras")
    np.testing.assert_array_equal(loaded.predict([x, MASK], verbose=0), before["logits"])
    after = attention_model(loaded).predict([x, MASK], verbose=0)
    assert set(after) == {"logits", "frame_maps", "temporal_weights"}
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def _run(model, inputs):
    """One inference call without tracing a predict function (numpy out, dicts kept)."""
    out = model(inputs, training=False)
    if isinstance(out, dict):
        return {name: ops.convert_to_numpy(value) for name, value in out.items()}
    return ops.convert_to_numpy(out)


def test_cached_features_and_end_to_end_model_give_the_same_logits(tmp_path):
    encoder, _ = build_frame_encoder("mobilenet_v2", SIZE, "none", feature_map=True)
    calibrate_batchnorm(encoder, _frames(8))
    head = build_video_head(
        encoder.output.shape[1:], T, 3, temporal="tcn", frame_attention="cbam", width=16, seed=1
    )
    model = build_video_model(encoder, head, T)
    frames = _frames(2 * T, seed=2).reshape(2, T, SIZE, SIZE, 3)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    cached = _run(encoder, frames.reshape(-1, SIZE, SIZE, 3))
    from_cache = _run(head, [cached.reshape(2, T, *cached.shape[1:]), mask])
    end_to_end = _run(model, [frames, mask])
    # Two computation orders of one float32 network (XLA fuses them differently on JAX).
    np.testing.assert_allclose(from_cache, end_to_end, rtol=1e-5, atol=1e-5)
    # The nested head's maps reach the end-to-end model's sibling too.
    maps = _run(attention_model(model), [frames, mask])
    np.testing.assert_array_equal(maps["logits"], end_to_end)
    cached_maps = _run(attention_model(head), [cached.reshape(2, T, *cached.shape[1:]), mask])
    assert maps["frame_maps"].shape == (2, T, *cached.shape[1:3], 1)
    for name in ("frame_maps", "temporal_weights"):
        np.testing.assert_allclose(
            maps[name], cached_maps[name], rtol=1e-5, atol=1e-5, err_msg=name
        )
    head.save(tmp_path / "head.keras")
    reloaded = keras.saving.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(
        _run(reloaded, [cached.reshape(2, T, *cached.shape[1:]), mask]),
        from_cache,
        atol=1e-6,
    )


def test_same_seed_same_head_weights_whatever_the_temporal_module():
    a = build_video_head((24,), T, 5, temporal="tcn", width=16, seed=3)
    b = build_video_head((24,), T, 5, temporal="avg", width=16, seed=3)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(a.get_layer("frame_projection").kernel),
        ops.convert_to_numpy(b.get_layer("frame_projection").kernel),
    )


def test_bad_head_choices_are_user_errors():
    with pytest.raises(UserError, match="unknown temporal module 'lstm'"):
        build_video_head((8,), T, 2, temporal="lstm")
    with pytest.raises(UserError, match="unknown frame attention"):
        build_video_head((2, 2, 8), T, 2, frame_attention="linear")
