"""Image model builders: shapes, shared initial weights across attention variants, maps.

Backend-neutral (numpy and keras.ops only): CI also runs this file with KERAS_BACKEND=jax.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_attn.errors import UserError
from keras_attn.models import attention_layers, attention_model, build_image_model
from keras_attn.models.backbones import pretrained_backbone

SIZE = 32


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _legacy(model):
    """The same layers and weights in the graph a model had before its maps were graph
    tensors (what an old best.keras holds): no block is called with `return_attention`."""
    config = model.get_config()
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            node["kwargs"].pop("return_attention", None)
    legacy = keras.Model.from_config(config)
    legacy.set_weights(model.get_weights())
    return legacy


@pytest.mark.parametrize(
    ("backbone", "attention"),
    [
        ("small_cnn", "cbam"),
        ("resnet_small", "cbam"),
        ("densenet", "linear"),
        ("mobilenet_v2", "spatial"),
        ("mobilenet_v3_small", "channel"),
    ],
)
def test_every_backbone_maps_pixels_to_logits(backbone, attention):
    model = build_image_model(5, SIZE, backbone=backbone, attention=attention, seed=0)
    x = _pixels(2)
    logits = model.predict(x, verbose=0)
    assert logits.shape == (2, 5) and np.isfinite(logits).all()
    expected_blocks = 3 if backbone in ("small_cnn", "resnet_small") else 1
    assert len(attention_layers(model)) == expected_blocks


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet_small", "densenet"])
def test_same_seed_gives_same_initial_weights_in_shared_layers(backbone):
    plain = build_image_model(4, 32, backbone=backbone, attention="none", seed=3)
    cbam = build_image_model(4, 32, backbone=backbone, attention="cbam", seed=3)
    other_seed = build_image_model(4, 32, backbone=backbone, attention="none", seed=4)
    shared = [layer.name for layer in plain.layers if layer.weights]
    assert "logits" in shared and len(shared) > 5
    for name in shared:
        for a, b in zip(plain.get_layer(name).weights, cbam.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(
                ops.convert_to_numpy(a), ops.convert_to_numpy(b), err_msg=name
            )
    kernel = ops.convert_to_numpy(plain.get_layer("logits").kernel)
    assert not np.array_equal(kernel, ops.convert_to_numpy(other_seed.get_layer("logits").kernel))


def test_resnet_small_gates_the_residual_branch_and_never_the_identity_path():
    model = build_image_model(4, SIZE, backbone="resnet_small", attention="cbam", seed=0)
    plain = build_image_model(4, SIZE, backbone="resnet_small", attention="none", seed=0)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert [a.name for a in adds] == [f"stage{s}_block1_add" for s in (1, 2, 3)]
    for add in adds:
        shortcut, branch = (t._keras_history.operation for t in add.input)
        assert branch.name == add.name.replace("_add", "_attention")  # gate, then add
        assert "attention" not in shortcut.name  # the identity path is not gated
    # With the branch's last conv at zero every block is the identity: the gates then
    # change nothing, so with and without CBAM the logits agree.
    x = _pixels(2, seed=3)
    for net in (model, plain):
        for add in adds:
            conv = net.get_layer(add.name.replace("_add", "_conv2"))
            conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    np.testing.assert_allclose(
        model.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    assert model.get_layer("final_relu").output.shape[1:] == (SIZE // 4, SIZE // 4, 128)


def test_widths_and_blocks_shape_the_resnet():
    model = build_image_model(
        4, SIZE, backbone="resnet_small", attention="channel", widths=(8, 16), blocks=2
    )
    assert model.get_layer("final_relu").output.shape[1:] == (SIZE // 2, SIZE // 2, 16)
    assert len(attention_layers(model)) == 4


# small_cnn at 32 px: stages of 32x32, 16x16 and 8x8 with 32, 64 and 128 channels.
SMALL_CNN_SPATIAL = {
    "spatial_map_stage1": (32, 32, 1),
    "spatial_map_stage2": (16, 16, 1),
    "spatial_map_stage3": (8, 8, 1),
}
SMALL_CNN_CHANNEL = {
    "channel_weights_stage1": (1, 1, 32),
    "channel_weights_stage2": (1, 1, 64),
    "channel_weights_stage3": (1, 1, 128),
}


@pytest.mark.parametrize(
    ("backbone", "attention", "expected"),
    [
        ("small_cnn", "spatial", SMALL_CNN_SPATIAL),
        ("small_cnn", "channel", SMALL_CNN_CHANNEL),
        ("densenet", "linear", {"spatial_map_head": (16, 16, 1)}),
    ],
)
def test_attention_model_returns_the_logits_and_every_map(backbone, attention, expected):
    model = build_image_model(3, SIZE, backbone=backbone, attention=attention, seed=0)
    sibling = attention_model(model)
    x = _pixels(2, seed=1)
    outputs = sibling.predict(x, verbose=0)
    assert {k: v.shape[1:] for k, v in outputs.items()} == {"logits": (3,), **expected}
    # One graph: the sibling's logits are the classifier's, bit for bit.
    np.testing.assert_array_equal(outputs["logits"], model.predict(x, verbose=0))
    for name in expected:
        assert outputs[name].min() >= 0 and outputs[name].max() <= 1, name


@pytest.fixture(scope="module")
def cbam_model():
    return build_image_model(3, SIZE, attention="cbam", seed=0)


def test_maps_are_the_tensors_the_classifier_computes(cbam_model):
    model = cbam_model
    sibling = attention_model(model, feature_layer="pool")
    block = model.get_layer("stage3_attention")
    # The block's own second output, its input to the pooling, and the same variables:
    # nothing was called again, cloned or copied.
    assert sibling.output["spatial_map_stage3"] is block.output[1]
    assert sibling.output["features"] is model.get_layer("pool").input
    assert all(a is b for a, b in zip(sibling.weights, model.weights, strict=True))
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers)
    x = _pixels(2, seed=2)
    features = keras.Model(model.input, block.input).predict(x, verbose=0)
    _, direct = block(features, training=False, return_attention=True)
    np.testing.assert_allclose(
        sibling.predict(x, verbose=0)["spatial_map_stage3"],
        ops.convert_to_numpy(direct),
        atol=1e-6,
    )


def test_attention_model_of_a_model_loaded_from_keras_file(tmp_path, cbam_model):
    model = cbam_model
    model.save(tmp_path / "best.keras")
    loaded = keras.saving.load_model(tmp_path / "best.keras")
    x = _pixels(2, seed=3)
    # The saved classifier stays single-output.
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    before = attention_model(model).predict(x, verbose=0)
    after = attention_model(loaded).predict(x, verbose=0)
    assert set(after) == set(before)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_maps_in_the_graph_change_no_output_and_old_files_load(tmp_path):
    model = build_image_model(3, SIZE, attention="linear", seed=0)
    legacy = _legacy(model)
    x = _pixels(2, seed=4)
    # Asking the blocks for their maps leaves the logits exactly as they were.
    np.testing.assert_array_equal(legacy.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [w.path for w in legacy.weights] == [w.path for w in model.weights]
    legacy.save(tmp_path / "old.keras")
    old = keras.saving.load_model(tmp_path / "old.keras")
    with pytest.raises(ValueError, match="stage1_attention, stage2_attention, stage3_attention"):
        attention_model(old)
    # The documented way out: a new graph, the old file's weights.
    rebuilt = build_image_model(3, SIZE, attention="linear", seed=1)
    rebuilt.load_weights(tmp_path / "old.keras")
    np.testing.assert_array_equal(
        attention_model(rebuilt).predict(x, verbose=0)["logits"], old.predict(x, verbose=0)
    )


def test_bad_model_choices_are_one_line_user_errors():
    with pytest.raises(UserError, match="unknown attention 'sparse'; valid: none, channel"):
        build_image_model(3, 32, attention="sparse")
    with pytest.raises(UserError, match="only efficientnet_lite0, mobilenet_v2"):
        build_image_model(3, 32, backbone="small_cnn", weights="imagenet")
    with pytest.raises(UserError, match="no such file"):
        build_image_model(3, 32, backbone="mobilenet_v2", weights="/nonexistent.weights.h5")


@pytest.mark.parametrize("size", [96, 64])  # 64: Keras also warns that 224 weights would load
def test_uncached_imagenet_weights_offline_is_one_clear_line(tmp_path, monkeypatch, capsys, size):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # Keras reads KERAS_HOME once, at import: point its cache at the empty folder too.
    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path))
    # Nothing listens on port 9: the download fails at once, even on a networked machine.
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with warnings.catch_warnings(record=True) as warned, pytest.raises(UserError) as err:
        warnings.simplefilter("always")
        pretrained_backbone("mobilenet_v2", size, "imagenet")
    message = str(err.value)
    assert "not cached" in message and "--backbone-weights none" in message
    assert "\n" not in message
    # Nothing misleading before the error: no "Downloading data from ...", no size warning.
    assert capsys.readouterr().out == "" and [str(w.message) for w in warned] == []


def test_backbone_weights_from_a_file(tmp_path):
    keras.utils.set_random_seed(1)
    net, _ = pretrained_backbone("mobilenet_v2", 32, "none")
    path = tmp_path / "backbone.weights.h5"
    net.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded, _ = pretrained_backbone("mobilenet_v2", 32, str(path))
    for a, b in zip(net.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
