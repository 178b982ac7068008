"""Model builders, and the attention maps their graphs hold (`attention_model`).

Only Keras (keras.ops): importing this package loads no TensorFlow.
"""

from keras_attn.models.attention import attention_maps, attention_model
from keras_attn.models.efficientnet_lite import efficientnet_lite0
from keras_attn.models.image import attention_layers, build_image_model
from keras_attn.models.video import build_frame_encoder, build_video_head, build_video_model

__all__ = [
    "attention_layers",
    "attention_maps",
    "attention_model",
    "build_frame_encoder",
    "build_image_model",
    "build_video_head",
    "build_video_model",
    "efficientnet_lite0",
]
