"""Image classifiers: a backbone, attention, global pooling and a linear classifier."""

from __future__ import annotations

import keras

from keras_attn.errors import UserError
from keras_attn.layers import ATTENTION, attention_names, get_attention
from keras_attn.models.backbones import (
    BACKBONES,
    PRETRAINABLE,
    densenet,
    layer_seed,
    mobilenet,
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
) -> keras.Model:
    """(B, image_size, image_size, 3) pixels in [0, 255] -> (B, num_classes) logits.

    `small_cnn` has an attention block after every stage; the other backbones
    get one on their final feature map (`head_attention`). A pretrained
    MobileNet runs with BatchNorm in inference mode, frozen or fine-tuned
    (`trainable_backbone`, default: frozen when pretrained, trained when random).
    """
    check_image_model_choices(backbone, attention, weights)
    options = attention_options or {}
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if backbone == "small_cnn":
        x = small_cnn(inputs, attention, seed, attention_options=options)
    else:
        if backbone == "densenet":
            x = densenet(inputs, seed)
        else:
            net, preprocess = mobilenet(backbone, image_size, weights)
            pretrained = weights != "none"
            net.trainable = (not pretrained) if trainable_backbone is None else trainable_backbone
            x = preprocess(inputs) if preprocess is not None else inputs
            # A pretrained backbone keeps its BatchNorm statistics even when fine-tuned.
            x = net(x, training=False) if pretrained else net(x)
        x = get_attention(
            attention, name="head_attention", seed=layer_seed(seed, "head_attention"), **options
        )(x)
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


def attention_map_model(model: keras.Model, layer_name: str | None = None) -> keras.Model:
    """A model mapping the same inputs to one attention block's map.

    `layer_name` defaults to the last attention block; the map model is a snapshot
    of the current weights. Output: (B,h,w,1) for
    spatial maps, (B,1,1,C) for channel weights.
    """
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"{model.name} has no attention layer")
    layer = model.get_layer(layer_name) if layer_name else layers[-1]
    features = keras.Model(model.inputs, layer.input)
    # A second call of the trained layer in a new graph loses its second output
    # (Keras 3.15), so a copy with the same weights produces the map.
    copy = layer.__class__.from_config(layer.get_config())
    inputs = keras.Input(model.inputs[0].shape[1:])
    _, attention = copy(features(inputs), return_attention=True)
    copy.set_weights(layer.get_weights())
    return keras.Model(inputs, attention, name=f"{layer.name}_map")
