"""Video classifiers: a frozen per-frame encoder, then a temporal head over the frames.

The encoder runs once per clip (its features are cached on disk, see
`keras_attn.data.features`); the head is what trains:

    features (B,T,D) or maps (B,T,h,w,C), mask (B,T)
      -> [frame attention on each map, global pooling]          (frame_attention)
      -> per-frame projection -> temporal module (tcn, avg, ...) -> logits (B,K)
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import keras
import numpy as np

from keras_attn.errors import UserError
from keras_attn.layers import FramewiseAttention, get_temporal, temporal_names
from keras_attn.models.backbones import (
    OFFLINE_IMAGENET,
    PRETRAINABLE,
    layer_seed,
    pretrained_backbone,
)

log = logging.getLogger(__name__)

FRAME_ATTENTION = ("none", "spatial", "cbam")
# The random encoder does not depend on the run's seed, so every seed and variant of
# a study shares one feature cache.
ENCODER_SEED = 0


def build_frame_encoder(
    backbone: str, image_size: int, weights: str = "auto", feature_map: bool = False
) -> tuple[keras.Model, str]:
    """A frozen encoder: `(N,S,S,3)` pixels in [0, 255] -> `(N,D)` (`(N,h,w,C)` with `feature_map`).

    Built under the global dtype policy (a run's: `acceleration.precision_policy`); its
    features are float32 under every policy.

    `weights`: "imagenet", "none" (random), a weights file, or "auto" (ImageNet: for
    EfficientNet-Lite0 always, offline; for the MobileNets where cached or downloadable,
    else random with a loud warning). Returns the encoder and the weights actually used
    ("imagenet-<sha256 prefix>" for EfficientNet-Lite0's, "imagenet", "random", or a
    file's sha256 prefix), which identifies it in the feature cache.
    """
    if backbone not in PRETRAINABLE:
        raise UserError(f"unknown frame backbone '{backbone}'; valid: {', '.join(PRETRAINABLE)}")
    keras.utils.set_random_seed(ENCODER_SEED)
    if weights == "auto" and backbone in OFFLINE_IMAGENET:
        weights = "imagenet"
    if weights == "auto":
        try:
            net, preprocess = pretrained_backbone(backbone, image_size, "imagenet")
            used = "imagenet"
        except UserError:
            log.warning(
                "ImageNet weights for %s are unavailable (not cached, no network): the frozen "
                "frame encoder is RANDOM. Results say little about pretrained features; pass "
                "--backbone-weights PATH or cache the weights to fix this.",
                backbone,
            )
            net, preprocess = pretrained_backbone(backbone, image_size, "none")
            used = "random"
    else:
        net, preprocess = pretrained_backbone(backbone, image_size, weights)
        used = {"imagenet": "imagenet", "none": "random"}.get(weights) or _file_id(weights)
        if used == "imagenet" and backbone in OFFLINE_IMAGENET:
            from keras_attn.models.efficientnet_weights import SOURCE_SHA256

            used = f"imagenet-{SOURCE_SHA256[:16]}"
    net.trainable = False
    frames = keras.Input((image_size, image_size, 3), name="frames")
    x = preprocess(frames) if preprocess is not None else frames
    x = net(x, training=False)
    if not feature_map:
        x = keras.layers.GlobalAveragePooling2D(name="frame_pool")(x)
    if x.dtype != "float32":  # built under a mixed policy: features leave it as float32
        x = keras.layers.Activation("linear", dtype="float32", name="features_float32")(x)
    encoder = keras.Model(frames, x, name=f"{backbone}_encoder")
    encoder.trainable = False
    return encoder, used


def _file_id(path: str) -> str:
    return "file-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def calibrate_batchnorm(encoder: keras.Model, frames: np.ndarray) -> None:
    """Sets a random encoder's BatchNorm statistics to those of `frames`.

    With random weights and the initial statistics (mean 0, variance 1), every
    block shrinks the signal: MobileNetV2's pooled features end up around 1e-12,
    below any normalisation epsilon, and the head cannot learn. One pass in
    training mode with momentum 0 gives each layer the statistics of real frames
    (data-dependent initialisation), so the frozen random features are O(1).
    """
    norms = [
        layer
        for layer in encoder._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    saved = [(layer.momentum, layer.trainable) for layer in norms]
    for layer in norms:
        # A frozen BatchNorm always runs in inference mode, so unfreeze it for one pass.
        layer.momentum, layer.trainable = 0.0, True
    try:
        encoder(frames.astype("float32"), training=True)
    finally:
        for layer, (momentum, trainable) in zip(norms, saved, strict=True):
            layer.momentum, layer.trainable = momentum, trainable


def build_video_head(
    feature_shape: tuple[int, ...],
    num_frames: int,
    num_classes: int,
    temporal: str = "tcn",
    frame_attention: str = "none",
    width: int = 128,
    dropout: float = 0.3,
    seed: int = 0,
    temporal_options: dict | None = None,
) -> keras.Model:
    """`[features (B,T,*feature_shape), mask (B,T) bool]` -> logits `(B, num_classes)`.

    `feature_shape` is `(D,)` for pooled features or `(h, w, C)` for feature maps,
    which `frame_attention` ("spatial" or "cbam") re-weights before pooling. The
    temporal module's frame weights `(B,T)` and the frame maps `(B,T,h,w,1)` are
    tensors of the graph: `attention_model(head)` returns them as
    `temporal_weights` and `frame_maps` beside the `logits`.
    """
    if temporal not in temporal_names():
        raise UserError(
            f"unknown temporal module '{temporal}'; valid: {', '.join(temporal_names())}"
        )
    if frame_attention not in FRAME_ATTENTION:
        raise UserError(
            f"unknown frame attention '{frame_attention}'; valid: {', '.join(FRAME_ATTENTION)}"
        )
    if (frame_attention != "none") != (len(feature_shape) == 3):
        raise ValueError("frame attention needs feature maps (h, w, C); pooled features need none")

    def seeded(name):
        return dict(name=name, seed=layer_seed(seed, name))

    features = keras.Input((num_frames, *feature_shape), name="features")
    mask = keras.Input((num_frames,), dtype="bool", name="mask")
    x = features
    if frame_attention != "none":
        # Called for its maps too, so they are tensors of the graph (`frame_maps`).
        x, _ = FramewiseAttention(
            frame_attention,
            options={"seed": layer_seed(seed, "frame_attention")},
            name="frame_attention",
        )(x, return_attention=True)
    # Frozen features differ in scale by orders of magnitude between pretrained and
    # random encoders; normalising each frame's vector makes one set of defaults fit both.
    x = keras.layers.LayerNormalization(name="feature_norm")(x)
    x = keras.layers.Dropout(
        dropout, seed=layer_seed(seed, "feature_dropout"), name="feature_dropout"
    )(x)
    x = keras.layers.Dense(
        width,
        activation="relu",
        name="frame_projection",
        kernel_initializer=keras.initializers.HeNormal(seed=layer_seed(seed, "frame_projection")),
    )(x)
    temporal_module = get_temporal(temporal, **seeded("temporal"), **(temporal_options or {}))
    x, _ = temporal_module(x, mask=mask, return_attention=True)
    x = keras.layers.Dropout(dropout, seed=layer_seed(seed, "head_dropout"), name="head_dropout")(x)
    logits = keras.layers.Dense(
        num_classes,
        name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed(seed, "logits")),
    )(x)
    return keras.Model([features, mask], logits, name=f"video_{temporal}")


def build_video_model(encoder: keras.Model, head: keras.Model, num_frames: int) -> keras.Model:
    """`[frames (B,T,S,S,3) in [0, 255], mask (B,T)]` -> logits: encoder on every frame, then head.

    The path without the feature cache: the frozen encoder runs on every batch.
    `attention_model(model)` also reaches the head's maps, on the frames.
    """
    size = encoder.input.shape[1]
    frames = keras.Input((num_frames, size, size, 3), name="frames")
    mask = keras.Input((num_frames,), dtype="bool", name="mask")
    features = keras.layers.TimeDistributed(encoder, name="frame_encoder")(frames)
    return keras.Model([frames, mask], head([features, mask]), name=f"{head.name}_end_to_end")
