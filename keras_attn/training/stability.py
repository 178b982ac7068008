"""Training-stability measurements logged with every epoch: gradient norms, batch-loss spread.

`StabilityModel` is the functional model every run trains: its `train_step` is
Keras' own plus three metrics, reset each epoch like `loss`, so they land in
`history.csv` and TensorBoard beside it:

- `grad_norm_mean`, `grad_norm_max`: the global L2 norm of the loss gradient over
  all trainable weights, averaged and maximised over the epoch's steps;
- `batch_loss_std`: the standard deviation of the per-batch training losses
  within the epoch (noise the epoch mean hides).

`GeneralizationGap` adds `gap_accuracy` (train − val accuracy) and `gap_loss`
(val − train loss) to the epoch logs.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

STABILITY_METRICS = ("grad_norm_mean", "grad_norm_max", "batch_loss_std")


@keras.saving.register_keras_serializable(package="keras_attn")
class RunningMax(keras.metrics.Metric):
    """The largest value seen since the last reset."""

    def __init__(self, name="max", **kwargs):
        super().__init__(name=name, **kwargs)
        # Every replica sees the same value (see StabilityModel), so their mean is it.
        self.value = self.add_variable((), initializer="zeros", aggregation="mean", name="value")

    def update_state(self, values):
        self.value.assign(ops.maximum(self.value, ops.max(values)))

    def reset_state(self):
        self.value.assign(0.0)

    def result(self):
        # A copy: fit keeps the epoch's results while evaluate resets the variable.
        return ops.copy(self.value)


@keras.saving.register_keras_serializable(package="keras_attn")
class RunningStd(keras.metrics.Metric):
    """Standard deviation (ddof 0) of the values seen since the last reset."""

    def __init__(self, name="std", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable((), initializer="zeros", name="total")
        self.total_sq = self.add_variable((), initializer="zeros", name="total_sq")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, values):
        values = ops.cast(ops.reshape(values, (-1,)), "float32")
        self.total.assign_add(ops.sum(values))
        self.total_sq.assign_add(ops.sum(values * values))
        self.count.assign_add(ops.cast(ops.shape(values)[0], "float32"))

    def result(self):
        count = ops.maximum(self.count, 1.0)
        mean = self.total / count
        return ops.sqrt(ops.maximum(self.total_sq / count - mean * mean, 0.0))


@keras.saving.register_keras_serializable(package="keras_attn")
class StabilityModel(keras.Model):
    """A functional model whose training step also measures gradient norms and loss spread.

    Build it from an existing functional model's graph (the layers are shared):
    `StabilityModel(model.input, model.output, name=model.name)`. Inference,
    saving and loading are those of the functional model.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grad_norm_mean = keras.metrics.Mean(name="grad_norm_mean")
        self.grad_norm_max = RunningMax(name="grad_norm_max")
        self.batch_loss_std = RunningStd(name="batch_loss_std")

    def train_step(self, data):
        # Keras' TensorFlow train_step (3.15), plus the gradient norm and the batch loss.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            # Divided by the number of replicas (their gradients are summed).
            loss = self._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            replica_loss = loss * replicas
            self._loss_tracker.update_state(
                replica_loss, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
            )
            scaled = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        gradients = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(gradients, weights, strict=True))
        self._update_stability(replica_loss, [g for g in gradients if g is not None], replicas)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _update_stability(self, replica_loss, gradients, replicas):
        if replicas > 1:
            # The whole batch's loss and gradient, the same on every replica, so the
            # metrics' sum-over-replicas aggregation keeps means and spreads exact.
            context = tf.distribute.get_replica_context()
            replica_loss = context.all_reduce("mean", replica_loss)
            gradients = context.all_reduce("sum", gradients)
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            gradients = [g / self.optimizer.dynamic_scale for g in gradients]
        norm = tf.linalg.global_norm(gradients)
        # A float16 overflow makes the loss scaler skip the step; it is not a gradient.
        finite = tf.cast(tf.math.is_finite(norm), norm.dtype)
        self.grad_norm_mean.update_state(norm, sample_weight=finite)
        self.grad_norm_max.update_state(tf.where(finite > 0, norm, 0.0))
        self.batch_loss_std.update_state(replica_loss)

    def test_step(self, data):
        logs = super().test_step(data)
        # Untouched during evaluation: reporting them as val_* would only be zeros.
        return {k: v for k, v in logs.items() if k not in STABILITY_METRICS}


def with_stability_metrics(model: keras.Model) -> keras.Model:
    """The same layers and graph as `model`, as a StabilityModel (functional models only)."""
    if isinstance(model, StabilityModel):
        return model
    return StabilityModel(model.input, model.output, name=model.name)


class GeneralizationGap(keras.callbacks.Callback):
    """Adds `gap_accuracy` (train − val accuracy) and `gap_loss` (val − train loss) to the logs.

    The training figures are measured with dropout and augmentation on, so the gap
    is a trend to compare between variants, not an unbiased estimate.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if "accuracy" in logs and "val_accuracy" in logs:
            logs["gap_accuracy"] = float(logs["accuracy"]) - float(logs["val_accuracy"])
        if "loss" in logs and "val_loss" in logs:
            logs["gap_loss"] = float(logs["val_loss"]) - float(logs["loss"])
