"""Batch normalisation as one fused kernel each way on TensorFlow; Keras' own elsewhere.

Keras 3 normalises on TensorFlow with `tf.nn.moments` and `tf.nn.batch_normalization`
after casting the whole map to float32: about ten elementwise passes over the map forward
and backward, plus two casts in mixed precision. On a CPU those passes cost more than the
convolutions once the convolutions run in bfloat16 (benchmarks/RESULTS.md section 15).
TensorFlow's FusedBatchNormV3 does the same arithmetic in one kernel each way (oneDNN on
CPU, cuDNN on GPU), with float32 statistics over float16 or bfloat16 maps.

Same variables (gamma, beta, moving mean and variance), same update of the moving
statistics (Keras keeps the biased batch variance; the fused op returns the unbiased one,
which is scaled back), same outputs to float rounding, and `.keras` and `.weights.h5` files
of models built with `keras.layers.BatchNormalization` load into it. Other backends, masks, renorm,
synchronised statistics and anything but a (B, H, W, C) map take Keras' own path, so the
models still run on JAX: TensorFlow is imported only on the TensorFlow path.
"""

from __future__ import annotations

import keras

FUSED_DTYPES = ("float16", "bfloat16", "float32")


# The class keeps Keras' name: `.weights.h5` files (run backups, the converted ImageNet
# weights in the Keras cache) address each layer by its class name, so files written with
# `keras.layers.BatchNormalization` load into this layer and the other way round.
@keras.saving.register_keras_serializable(package="keras_attn")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over the channels of (B, H, W, C) -> (B, H, W, C),
    fused on TensorFlow.

    >>> layer = BatchNormalization()
    >>> tuple(layer(keras.ops.ones((2, 4, 4, 3)), training=True).shape)
    (2, 4, 4, 3)
    """

    def _fusable(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.standardize_dtype(inputs.dtype) in FUSED_DTYPES
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = self.moving_mean.shape
        gamma = self.gamma if self.scale else tf.ones(channels)
        beta = self.beta if self.center else tf.zeros(channels)
        if training and self.trainable:
            outputs, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, is_training=True
            )[:3]
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], "float32")
            # One value per channel (count 1) has no unbiased variance; Keras' is 0, and
            # multiply_no_nan keeps it 0 whatever a kernel returns for it.
            variance = tf.math.multiply_no_nan(unbiased, (count - 1.0) / count)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
        else:
            outputs = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                is_training=False,
            )[0]
        return tf.cast(outputs, self.compute_dtype)
