"""Feature extractors: images (B,S,S,3) in [0, 255] -> feature map (B,h,w,C).

Every backbone normalises its own input, so saved models take raw pixels. Layers
get explicit names and seeded initializers: with the same seed, two models that
differ only in their attention blocks start with the same weights in every layer
they share, whatever order the layers were created in.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import warnings
from pathlib import Path

import keras

from keras_attn.errors import UserError
from keras_attn.layers import get_attention
from keras_attn.models import batch_norm

BACKBONES = (
    "small_cnn",
    "resnet_small",
    "densenet",
    "efficientnet_lite0",
    "mobilenet_v2",
    "mobilenet_v3_small",
)
PRETRAINABLE = ("efficientnet_lite0", "mobilenet_v2", "mobilenet_v3_small")
# ImageNet weights that ship with the project's requirements (no network needed).
OFFLINE_IMAGENET = ("efficientnet_lite0",)


def layer_seed(seed: int, name: str) -> int:
    """A per-layer seed that depends on the run's seed and the layer's name only."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def _conv(x, filters, kernel_size, name, seed, strides=1):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        name=name,
        kernel_initializer=keras.initializers.HeNormal(seed=layer_seed(seed, name)),
    )(x)


def _bn_relu(x, name):
    x = batch_norm.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def attention_block(x, attention, name, seed, options):
    """`get_attention(attention)` on x (B,h,w,C) -> (B,h,w,C), called with `return_attention`.

    The map stays a tensor of the graph (the block's second output), which
    `keras_attn.models.attention_model` exposes; only the re-weighted features go on.
    """
    layer = get_attention(attention, name=name, seed=layer_seed(seed, name), **options)
    outputs, _ = layer(x, return_attention=True)
    return outputs


def small_cnn(x, attention="none", seed=0, widths=(32, 64, 128), attention_options=None):
    """Three stages of two conv-BN-ReLU, each followed by an attention block.

    Attention acts *inside* the trainable CNN here: every stage's output is
    re-weighted before the next stage sees it. (B,S,S,3) -> (B,S/4,S/4,widths[-1]).
    """
    options = attention_options or {}
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(x)
    for stage, filters in enumerate(widths, start=1):
        for i in (1, 2):
            name = f"stage{stage}_conv{i}"
            x = _bn_relu(_conv(x, filters, 3, name, seed), name)
        x = attention_block(x, attention, f"stage{stage}_attention", seed, options)
        if stage < len(widths):
            x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    return x


def resnet_small(
    x, attention="none", seed=0, widths=(32, 64, 128), blocks=1, attention_options=None
):
    """A pre-activation ResNet (He et al. 2016) with attention where CBAM puts it.

    A stem conv, then one stage per width of `blocks` residual blocks; every stage but
    the first halves the resolution in its first block (1x1 projection shortcut). Each
    block is `x + A(F(x))` with `F` = BN-ReLU-conv3x3-BN-ReLU-conv3x3 and `A` the
    attention block on the residual branch, before the addition (Woo et al. 2018, Fig. 3):
    the identity path is never gated, so `attention="none"` is a plain ResNet.
    (B,S,S,3) -> (B,S/2^(len(widths)-1),...,widths[-1]), after a final BN-ReLU.
    """
    options = attention_options or {}
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(x)
    x = _conv(x, widths[0], 3, "stem_conv", seed)
    for stage, filters in enumerate(widths, start=1):
        for block in range(1, blocks + 1):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            pre = _bn_relu(x, f"{name}_pre")
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = _conv(pre, filters, 1, f"{name}_shortcut", seed, strides=strides)
            y = _conv(pre, filters, 3, f"{name}_conv1", seed, strides=strides)
            y = _conv(_bn_relu(y, f"{name}_mid"), filters, 3, f"{name}_conv2", seed)
            y = attention_block(y, attention, f"{name}_attention", seed, options)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return _bn_relu(x, "final")


def _dense_layer(x, growth, bottleneck, dropout, name, seed):
    y = _bn_relu(x, f"{name}_a")
    y = _conv(y, bottleneck * growth, 1, f"{name}_conv1", seed)
    y = _bn_relu(y, f"{name}_b")
    y = _conv(y, growth, 3, f"{name}_conv3", seed)
    if dropout:
        y = keras.layers.Dropout(
            dropout, seed=layer_seed(seed, f"{name}_drop"), name=f"{name}_drop"
        )(y)
    return keras.layers.Concatenate(name=f"{name}_concat")([x, y])


def densenet(x, seed=0, blocks=(3, 3), growth=24, bottleneck=2, dropout=0.2, compression=0.5):
    """The original study's small DenseNet: stem, dense block, transition, dense block.

    (B,S,S,3) -> (B,S/2,S/2,C); C = 120 with the defaults.
    """
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(x)
    x = _conv(x, 2 * growth, 3, "stem_conv", seed)
    for b, layers in enumerate(blocks, start=1):
        for i in range(1, layers + 1):
            x = _dense_layer(x, growth, bottleneck, dropout, f"block{b}_layer{i}", seed)
        if b < len(blocks):
            name = f"transition{b}"
            x = _bn_relu(x, name)
            x = _conv(x, int(x.shape[-1] * compression), 1, f"{name}_conv", seed)
            x = keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)
    return _bn_relu(x, "final")


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def _said_after_success(build, **kwargs):
    """`build(**kwargs)`, with what it prints and warns passed on only if it succeeds.

    Keras prints "Downloading data from https://..." (and warns about the input size) before
    it knows whether the network is there; offline those lines would precede our one-line
    error as if the download had worked.
    """
    with (
        warnings.catch_warnings(record=True) as warned,
        contextlib.redirect_stdout(io.StringIO()) as said,
    ):
        warnings.simplefilter("always")
        result = build(**kwargs)
    sys.stdout.write(said.getvalue())
    for w in warned:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def pretrained_backbone(name: str, image_size: int, weights: str = "none"):
    """A pretrainable backbone without its classifier, and how to feed it.

    Returns `(backbone, preprocess)`: `preprocess` maps [0, 255] pixels to what the
    backbone expects, or is None where it normalises internally (EfficientNet-Lite0,
    MobileNetV3; MobileNetV2 wants [-1, 1]). `weights`: "imagenet" (EfficientNet-Lite0:
    offline, from its pip package; MobileNets: Keras' cache or a download), "none"
    (random), or a path to a weights file.
    """
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise UserError(f"--backbone-weights: no such file '{weights}'; use imagenet, none or PATH")
    if name == "efficientnet_lite0":
        from keras_attn.models.efficientnet_lite import efficientnet_lite0

        shape = (image_size, image_size, 3)
        net = efficientnet_lite0(
            include_top=False, weights=None if weights == "none" else weights, input_shape=shape
        )
        return net, None
    keras_weights = None if weights == "none" else weights
    common = dict(include_top=False, weights=keras_weights, input_shape=(image_size, image_size, 3))
    try:
        if name == "mobilenet_v2":
            backbone = _said_after_success(keras.applications.MobileNetV2, **common)
            preprocess = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")
        else:
            backbone = _said_after_success(
                keras.applications.MobileNetV3Small, include_preprocessing=True, **common
            )
            preprocess = None
    except Exception as err:  # keras raises bare Exception("URL fetch failure ...")
        if weights == "imagenet" and ("URL fetch failure" in str(err) or isinstance(err, OSError)):
            raise UserError(
                f"ImageNet weights for {name} are not cached in {_keras_home() / 'models'} and "
                "could not be downloaded (no network?); use --backbone-weights none, or PATH "
                "to a weights file"
            ) from None
        if weights not in ("imagenet", "none"):
            raise UserError(
                f"--backbone-weights {weights}: cannot load into {name}: {str(err).splitlines()[0]}"
            ) from None
        raise
    return backbone, preprocess
