"""Frame masks for the temporal modules: (B, T) bool or 0/1, False/0 marks a padded frame."""

from keras import ops

from keras_attn.layers._base import AttentionLayer


class ClipEncoder(AttentionLayer):
    """Base of the temporal modules: consumes the frame mask, returns an unmasked clip vector.

    Overriding `compute_mask` makes Keras treat the mask as consumed (no "destroys the mask"
    warning) while attaching no (B, T) mask to the (B, D) output.
    """

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape, return_attention=False):
        vector = (input_shape[0], self._clip_width(input_shape))
        return (vector, tuple(input_shape[:2])) if return_attention else vector

    def _clip_width(self, input_shape):
        """Width of the clip vector; pooling keeps the input's, encoders have their own."""
        return input_shape[-1]


def frame_mask(mask, inputs):
    """The mask as 0/1 in the inputs' dtype; all frames valid when `mask` is None."""
    if mask is None:
        return ops.ones(ops.shape(inputs)[:2], dtype=inputs.dtype)
    return ops.cast(ops.cast(mask, "bool"), inputs.dtype)


def normalize(weights, mask):
    """Zero padded frames and rescale to sum 1 (a clip with no valid frame keeps all zeros)."""
    weights = weights * mask
    total = ops.sum(weights, axis=1, keepdims=True)
    # Not max(total, eps): a small eps rounds to 0 in float16 and 0/0 is NaN.
    return weights / ops.where(total > 0, total, ops.ones_like(total))


def masked_softmax(logits, mask):
    # float32 so the large negative stays finite under mixed precision.
    logits = ops.where(mask > 0, ops.cast(logits, "float32"), -1e9)
    return normalize(ops.cast(ops.softmax(logits, axis=1), mask.dtype), mask)


def last_valid_weights(mask):
    """One-hot on the last valid frame of each clip, whatever the padding side."""
    steps = ops.shape(mask)[1]
    position = ops.cast(ops.arange(1, steps + 1), mask.dtype)
    last = ops.argmax(mask * position, axis=1)
    return ops.one_hot(last, steps, dtype=mask.dtype) * mask


def weighted_sum(inputs, weights):
    return ops.sum(inputs * weights[..., None], axis=1)
