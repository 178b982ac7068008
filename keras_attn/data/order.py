"""The order in which every training pipeline (images, clips, cached features) visits its items.

Each epoch's order is a stateless shuffle seeded by `[seed, epoch]`: a pure function of the
two, so a run resumed at epoch k sees exactly what an uninterrupted run sees from epoch k
on, whatever the model, the parallelism or the process.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def epoch_order(num_items: int, seed, epoch) -> tf.Tensor:
    """int64 `(num_items,)`: epoch `epoch`'s permutation of `0 .. num_items - 1`.

    `seed` and `epoch` may be Python ints or int64 tensors (inside a `tf.data` function).
    """
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(num_items, dtype=tf.int64), seed=key)


def epoch_dataset(
    num_items: int,
    seed: int,
    training: bool,
    start_epoch: int,
    epochs: int,
    build_epoch: Callable[[tf.data.Dataset, tf.Tensor], tf.data.Dataset],
) -> tf.data.Dataset:
    """Item order for training (epochs `start_epoch .. epochs - 1` back to back) or evaluation.

    Training visits each epoch in `epoch_order`; evaluation is one pass in item order.
    `build_epoch(indices, epoch)` turns one epoch's int64 index dataset into its examples
    (and batches, so batches never straddle epochs); `epoch` is an int64 scalar tensor
    (0 for evaluation) from which per-example randomness can be seeded.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0 <= start_epoch <= epochs:
        raise ValueError(f"need 0 <= start_epoch <= epochs, got {start_epoch} and {epochs}")
    if num_items < 1:
        raise ValueError("no items to build a dataset from")
    if not training:
        return build_epoch(tf.data.Dataset.range(num_items), tf.constant(0, tf.int64))

    def one_epoch(epoch):
        order = epoch_order(num_items, seed, epoch)
        return build_epoch(tf.data.Dataset.from_tensor_slices(order), epoch)

    return tf.data.Dataset.range(start_epoch, epochs).flat_map(one_epoch)
