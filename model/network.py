"""The network: a small convolutional classifier, defined in one place.

Input ``image``: float32 ``(N, S, S, 1)`` in [0, 1] (see core/preprocess.py).
Output ``probabilities``: float32 ``(N, classes)``, softmax.

The stem is a stride-2 convolution without batch normalization: the network's first layer works
at half the input's resolution, and no layer normalizes a full-resolution activation (issue 9:
in the earlier network, a convolution, batch normalization and pooling at full resolution took
most of a training step's time, memory-bound, for few of its multiply-adds).
"""

from __future__ import annotations

import keras

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


def _conv_block(x, filters: int, convolutions: int, dtype: str):
    for _ in range(convolutions):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, dtype=dtype)(x)
        # A fast-moving average: small datasets give few steps per epoch to settle it.
        x = keras.layers.BatchNormalization(momentum=0.9, dtype=dtype)(x)
        x = keras.layers.ReLU(dtype=dtype)(x)
    return keras.layers.MaxPooling2D(dtype=dtype)(x)


def _network(image_size: int, num_classes: int, dropout: float, dtype: str) -> keras.Model:
    inputs = keras.Input((image_size, image_size, 1), name=INPUT_NAME)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", dtype=dtype)(inputs)
    x = _conv_block(x, 32, 1, dtype)
    x = _conv_block(x, 64, 2, dtype)
    x = _conv_block(x, 96, 2, dtype)
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(x)
    x = keras.layers.Dropout(dropout, dtype=dtype)(x)
    # float32 probabilities whatever the compute dtype: softmax in float16 loses the small ones.
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME, dtype="float32")(x)
    return keras.Model(inputs, outputs, name="xray_cnn")


def build_network(image_size: int, num_classes: int, dropout: float = 0.3, speed: dict | None = None) -> keras.Model:
    """A stride-2 stem, three convolution blocks, global average pooling, dropout and a softmax layer.

    With ``speed`` (params.yaml ``speed:``) the machine is configured first (model/devices.py) and
    the network is built for training there: in the distribution strategy's scope, computing in
    float16 under mixed precision. Without it: float32, the default strategy (export, benchmarks).
    """
    if speed is None:
        return _network(image_size, num_classes, dropout, "float32")
    from model.devices import configure

    placement = configure(speed)
    with placement.strategy().scope():
        return _network(image_size, num_classes, dropout, placement.policy)
