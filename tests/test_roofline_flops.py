"""The roofline benchmark counts a training step's FLOPs from the traced graph: check the
count against the textbook figure for a convolution and a dense layer."""

import sys
from pathlib import Path

import keras
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cpu_roofline  # noqa: E402


def test_a_training_step_counts_forward_and_both_backward_products():
    batch, side, cin, cout, classes = 4, 8, 3, 5, 7
    inputs = keras.Input((side, side, cin))
    x = keras.layers.Conv2D(cout, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, use_bias=False)(x))
    flops = cpu_roofline.train_step_flops(
        model, tf.TensorSpec((batch, side, side, cin)), tf.TensorSpec((batch, classes))
    )
    conv = 2 * batch * side * side * cin * cout * 9
    dense = 2 * batch * side * side * cout * classes
    assert flops["Conv2D"] == conv
    assert flops["Conv2DBackpropFilter"] == conv
    # The first layer's input needs no gradient, so there is no Conv2DBackpropInput.
    assert "Conv2DBackpropInput" not in flops
    assert flops["MatMul"] == 3 * dense  # forward, and the gradients of input and weights
