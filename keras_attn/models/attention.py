"""Attention maps as named tensors of the classifier's own graph.

The builders call every attention block and temporal module with
`return_attention=True` and feed only its first output on: the map is the block's
second output, a tensor of the same functional graph, and the call argument is
saved with that graph, so a model loaded from `.keras` has it too. The classifier
still returns logits only (what `best.keras` holds); `attention_model(model)` is a
second `keras.Model` over the very same tensors, so nothing is cloned, copied or
called again and its maps always match the weights as they are now.

Output names, from the block's layer name (`stem`: the name less `_attention`):

- `spatial_map_<stem>`: `(B,h,w,1)` in [0, 1], where in a feature map a block looks
  (`spatial_map_stage1` ... `spatial_map_stage3` for small_cnn, `spatial_map_head`);
- `channel_weights_<stem>`: `(B,1,1,C)`, a channel gate;
- `<stem>_maps`: `(B,T,h,w,1)`, per-frame spatial maps (`frame_maps`);
- `<layer>_weights`: `(B,T)`, a temporal module's frame weights (`temporal_weights`).
"""

from __future__ import annotations

import keras

from keras_attn.layers import ATTENTION, TEMPORAL, FramewiseAttention

# The blocks that can return a map: with one in a graph that does not expose its map,
# the model predates maps as graph outputs (a legacy `.keras` file).
_MAPPABLE = (
    *ATTENTION.values(),
    FramewiseAttention,
    *{getattr(factory, "func", factory) for factory in TEMPORAL.values()},
)


# Keras 3.15 has no public API for a graph's nodes: `_nodes_by_depth`, `_inbound_nodes`
# and a node's `arguments` / `outputs` are what its own Functional and cloning code read.
def _graph_nodes(model: keras.Model) -> set[int]:
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise ValueError(f"{model.name} is not a functional model: its maps are not graph tensors")
    return {id(node) for nodes in nodes_by_depth.values() for node in nodes}


def _nodes(layer: keras.layers.Layer, graph: set[int]) -> list:
    """The calls of `layer` that belong to the model's graph (a layer may sit in several)."""
    return [node for node in layer._inbound_nodes if id(node) in graph]


def _stem(layer_name: str) -> str:
    return layer_name.removesuffix("_attention")


def spatial_map_name(layer_name: str) -> str:
    """An image block's spatial map's output name: `stage3_attention` -> `spatial_map_stage3`."""
    return f"spatial_map_{_stem(layer_name)}"


def _map_name(layer: keras.layers.Layer, node, attention) -> str:
    rank = len(attention.shape)
    if rank == 2:
        return f"{layer.name}_weights"
    if rank == 5:
        return f"{_stem(layer.name)}_maps"
    features = node.arguments.args[0]
    # A 1x1 gate on a larger map weights channels; on a 1x1 map the two coincide.
    spatial = attention.shape[-1] == 1 and (
        tuple(attention.shape[1:3]) == tuple(features.shape[1:3]) or features.shape[-1] == 1
    )
    return spatial_map_name(layer.name) if spatial else f"channel_weights_{_stem(layer.name)}"


def _add(maps: dict, name: str, tensor) -> None:
    if name in maps:
        raise ValueError(f"two attention maps would be named '{name}'; rename a layer")
    maps[name] = tensor


def attention_maps(model: keras.Model) -> dict:
    """The named map tensors of `model`'s graph, shallowest block first (see module doc).

    Nested functional models (an end-to-end video model's head) contribute their maps
    through one symbolic call of a map model over their layers, on the same inputs.
    Raises ValueError when an attention block's map is not a graph tensor.
    """
    graph = _graph_nodes(model)
    maps, hidden = {}, []
    for layer in model.layers:
        for node in _nodes(layer, graph):
            if node.arguments.kwargs.get("return_attention") and len(node.outputs) == 2:
                _add(maps, _map_name(layer, node, node.outputs[1]), node.outputs[1])
            elif isinstance(layer, _MAPPABLE):
                hidden.append(layer.name)
            elif getattr(layer, "_nodes_by_depth", None) is not None:
                inner = attention_maps(layer)
                if inner:
                    nested = keras.Model(layer.input, inner, name=f"{layer.name}_maps")
                    called = nested(*node.arguments.args, **node.arguments.kwargs)
                    for name, tensor in called.items():
                        _add(maps, name, tensor)
    if hidden:
        raise ValueError(
            f"{model.name}: the maps of {', '.join(hidden)} are not graph tensors (a model "
            "saved before they were); build it again with its builder and load_weights() "
            "the old file: layer names and weights are unchanged"
        )
    return maps


def attention_model(model: keras.Model, feature_layer: str | None = None) -> keras.Model:
    """A `keras.Model` over `model`'s layers: same inputs -> dict of `logits` and every map.

    `logits` is `model`'s first output tensor itself, so it equals `model.predict(x)`;
    the maps are named as in the module docstring. With `feature_layer`, the dict also
    holds `features`: the tensor that layer takes (`"pool"`: the last feature map
    `(B,h,w,C)` of an image model, what Grad-CAM differentiates).
    """
    outputs = {"logits": model.outputs[0], **attention_maps(model)}
    if feature_layer is not None:
        graph = _graph_nodes(model)
        (node,) = _nodes(model.get_layer(feature_layer), graph)
        outputs["features"] = node.arguments.args[0]
    return keras.Model(model.input, outputs, name=f"{model.name}_attention")
