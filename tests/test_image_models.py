"""Image model builders: shapes, shared initial weights across attention variants, maps."""

import keras
import numpy as np
import pytest

from keras_attn.errors import UserError
from keras_attn.models.backbones import mobilenet
from keras_attn.models.image import attention_layers, attention_map_model, build_image_model


@pytest.mark.parametrize(
    ("backbone", "attention"),
    [
        ("small_cnn", "cbam"),
        ("densenet", "linear"),
        ("mobilenet_v2", "spatial"),
        ("mobilenet_v3_small", "channel"),
    ],
)
def test_every_backbone_maps_pixels_to_logits(backbone, attention):
    model = build_image_model(5, 32, backbone=backbone, attention=attention, seed=0)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    logits = model.predict(x, verbose=0)
    assert logits.shape == (2, 5) and np.isfinite(logits).all()
    expected_blocks = 3 if backbone == "small_cnn" else 1
    assert len(attention_layers(model)) == expected_blocks


@pytest.mark.parametrize("backbone", ["small_cnn", "densenet"])
def test_same_seed_gives_same_initial_weights_in_shared_layers(backbone):
    plain = build_image_model(4, 32, backbone=backbone, attention="none", seed=3)
    cbam = build_image_model(4, 32, backbone=backbone, attention="cbam", seed=3)
    other_seed = build_image_model(4, 32, backbone=backbone, attention="none", seed=4)
    shared = [layer.name for layer in plain.layers if layer.weights]
    assert "logits" in shared and len(shared) > 5
    for name in shared:
        for a, b in zip(plain.get_layer(name).weights, cbam.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    kernel = plain.get_layer("logits").kernel.numpy()
    assert not np.array_equal(kernel, other_seed.get_layer("logits").kernel.numpy())


def test_attention_map_model_gives_spatial_maps_in_unit_range():
    model = build_image_model(3, 32, backbone="small_cnn", attention="spatial", seed=0)
    maps = attention_map_model(model, "stage1_attention")
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    a = maps.predict(x, verbose=0)
    assert a.shape == (2, 32, 32, 1)
    assert a.min() >= 0 and a.max() <= 1
    last = attention_map_model(model).predict(x, verbose=0)
    assert last.shape == (2, 8, 8, 1)


def test_bad_model_choices_are_one_line_user_errors():
    with pytest.raises(UserError, match="unknown attention 'sparse'; valid: none, channel"):
        build_image_model(3, 32, attention="sparse")
    with pytest.raises(UserError, match="only mobilenet_v2, mobilenet_v3_small take"):
        build_image_model(3, 32, backbone="small_cnn", weights="imagenet")
    with pytest.raises(UserError, match="no such file"):
        build_image_model(3, 32, backbone="mobilenet_v2", weights="/nonexistent.weights.h5")


def test_uncached_imagenet_weights_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # Keras reads KERAS_HOME once, at import: point its cache at the empty folder too.
    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path))
    # Nothing listens on port 9: the download fails at once, even on a networked machine.
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(UserError) as err:
        mobilenet("mobilenet_v2", 96, "imagenet")
    message = str(err.value)
    assert "not cached" in message and "--backbone-weights none" in message
    assert "\n" not in message


def test_backbone_weights_from_a_file(tmp_path):
    keras.utils.set_random_seed(1)
    net, _ = mobilenet("mobilenet_v2", 32, "none")
    path = tmp_path / "backbone.weights.h5"
    net.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded, _ = mobilenet("mobilenet_v2", 32, str(path))
    for a, b in zip(net.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
