"""Image classifiers: a backbone, attention, global pooling and a linear classifier."""

from __future__ import annotations

import keras

from keras_attn.errors import UserError
from keras_attn.layers import ATTENTION, attention_names
from keras_attn.models.backbones import (
    BACKBONES,
    PRETRAINABLE,
    attention_block,
    densenet,
    layer_seed,
    pretrained_backbone,
    resnet_small,
    small_cnn,
)


def check_image_model_choices(backbone: str, attention: str, weights: str) -> None:
    """Raises a one-line UserError for a choice the builder cannot take (cheap: call it
    before loading data)."""
    if backbone not in BACKBONES:
        raise UserError(f"unknown backbone '{backbone}'; valid: {', '.join(BACKBONES)}")
    if attention not in attention_names():
        raise UserError(f"unknown attention '{attention}'; valid: {', '.join(attention_names())}")
    if weights != "none" and backbone not in PRETRAINABLE:
        raise UserError(
            f"--backbone-weights {weights}: only {', '.join(PRETRAINABLE)} take pretrained weights"
        )


def build_image_model(
    num_classes: int,
    image_size: int,
    backbone: str = "small_cnn",
    attention: str = "cbam",
    weights: str = "none",
    trainable_backbone: bool | None = None,
    dropout: float = 0.2,
    seed: int = 0,
    attention_options: dict | None = None,
    widths: tuple[int, ...] = (32, 64, 128),
    blocks: int = 1,
) -> keras.Model:
    """(B, image_size, image_size, 3) pixels in [0, 255] -> (B, num_classes) logits.

    `small_cnn` has an attention block after every stage (on the main path);
    `resnet_small` one in every residual branch, before the addition (CBAM's
    placement; `widths` per stage and `blocks` per stage apply to these two); the
    other backbones get one on their final feature map (`head_attention`). A pretrained
    backbone runs with BatchNorm in inference mode, frozen or fine-tuned
    (`trainable_backbone`, default: frozen when pretrained, trained when random).
    Every block's map is a tensor of the graph: `attention_model(model)` returns
    the logits with `spatial_map_<stage>` (or `channel_weights_<stage>`) maps.
    """
    check_image_model_choices(backbone, attention, weights)
    options = attention_options or {}
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if backbone == "small_cnn":
        x = small_cnn(inputs, attention, seed, tuple(widths), attention_options=options)
    elif backbone == "resnet_small":
        x = resnet_small(inputs, attention, seed, tuple(widths), blocks, attention_options=options)
    else:
        if backbone == "densenet":
            x = densenet(inputs, seed)
        else:
            net, preprocess = pretrained_backbone(backbone, image_size, weights)
            pretrained = weights != "none"
            net.trainable = (not pretrained) if trainable_backbone is None else trainable_backbone
            x = preprocess(inputs) if preprocess is not None else inputs
            # A pretrained backbone keeps its BatchNorm statistics even when fine-tuned.
            x = net(x, training=False) if pretrained else net(x)
        x = attention_block(x, attention, "head_attention", seed, options)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(
            dropout, seed=layer_seed(seed, "head_dropout"), name="head_dropout"
        )(x)
    outputs = keras.layers.Dense(
        num_classes,
        name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed(seed, "logits")),
    )(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_{attention}")


def attention_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's attention blocks, in order (not the gates inside a CBAM)."""
    kinds = tuple(ATTENTION.values())
    return [layer for layer in model.layers if isinstance(layer, kinds)]
