"""Attention and temporal layers, and the registries that turn a name into a layer.

`get_attention("cbam", reduction=8, seed=0)` and `get_temporal("tcn", pool="max")`
are the only places that switch on a name; model builders pass their options
uniformly and each layer receives the ones its constructor accepts.
"""

import functools
import inspect

from keras_attn.layers.cbam import CBAM
from keras_attn.layers.channel_attention import ChannelAttention
from keras_attn.layers.frame_attention import FramewiseAttention
from keras_attn.layers.identity import IdentityAttention
from keras_attn.layers.linear_attention import LinearAttention
from keras_attn.layers.spatial_attention import SpatialAttention
from keras_attn.layers.temporal_conv import TCN, TemporalBlock
from keras_attn.layers.temporal_pooling import AttentionPooling, TemporalPooling
from keras_attn.layers.temporal_recurrent import TCNGRU, GRUEncoder
from keras_attn.layers.temporal_transformer import TransformerBlock, TransformerEncoder

ATTENTION = {
    "none": IdentityAttention,
    "channel": ChannelAttention,
    "spatial": SpatialAttention,
    "cbam": CBAM,
    "linear": LinearAttention,
}

TEMPORAL = {
    "avg": functools.partial(TemporalPooling, mode="avg"),
    "max": functools.partial(TemporalPooling, mode="max"),
    "last": functools.partial(TemporalPooling, mode="last"),
    "attention": AttentionPooling,
    "tcn": TCN,
    "gru": GRUEncoder,
    "tcn_gru": TCNGRU,
    "transformer": TransformerEncoder,
}

# Base-layer keywords every entry accepts through **kwargs.
_LAYER_OPTIONS = {"name", "dtype", "trainable"}


def _accepted(factory):
    """Constructor options of a registry entry, less those a partial already fixes."""
    fixed = factory.keywords if isinstance(factory, functools.partial) else {}
    cls = factory.func if isinstance(factory, functools.partial) else factory
    own = {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    return (own | _LAYER_OPTIONS) - set(fixed)


def _create(registry, kind, name, options):
    if name not in registry:
        raise ValueError(f"unknown {kind} '{name}'; valid: {', '.join(registry)}")
    known = set().union(*(_accepted(factory) for factory in registry.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"unknown {kind} option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    accepted = _accepted(registry[name])
    return registry[name](**{k: v for k, v in options.items() if k in accepted})


def attention_names():
    return list(ATTENTION)


def get_attention(name, /, **options):
    """A new image attention layer; options the chosen layer does not take are ignored.

    `name` is positional-only, so `name=` in `options` names the layer.
    """
    return _create(ATTENTION, "attention", name, options)


def temporal_names():
    return list(TEMPORAL)


def get_temporal(name, /, **options):
    """A new temporal module; options the chosen module does not take are ignored.

    `name` is positional-only, so `name=` in `options` names the layer.
    """
    return _create(TEMPORAL, "temporal module", name, options)


__all__ = [
    "ATTENTION",
    "CBAM",
    "GRUEncoder",
    "TCN",
    "TCNGRU",
    "TEMPORAL",
    "AttentionPooling",
    "ChannelAttention",
    "FramewiseAttention",
    "IdentityAttention",
    "LinearAttention",
    "SpatialAttention",
    "TemporalBlock",
    "TemporalPooling",
    "TransformerBlock",
    "TransformerEncoder",
    "attention_names",
    "get_attention",
    "get_temporal",
    "temporal_names",
]
