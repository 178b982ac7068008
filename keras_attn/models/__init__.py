from keras_attn.models.efficientnet_lite import efficientnet_lite0

__all__ = [
    "efficientnet_lite0",
]
