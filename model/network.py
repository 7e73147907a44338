"""The network: a small convolutional classifier, defined in one place.

Input ``image``: float32 ``(N, S, S, 1)`` in [0, 1] (see model/preprocess.py).
Output ``probabilities``: float32 ``(N, classes)``, softmax.
"""

from __future__ import annotations

import keras

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


def _conv_block(x, filters: int, convolutions: int):
    for _ in range(convolutions):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        # A fast-moving average: small datasets give few steps per epoch to settle it.
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
    return keras.layers.MaxPooling2D()(x)


def build_network(image_size: int, num_classes: int, dropout: float = 0.3) -> keras.Model:
    """Four convolution blocks, global average pooling, dropout and a softmax layer."""
    inputs = keras.Input((image_size, image_size, 1), name=INPUT_NAME)
    x = _conv_block(inputs, 16, 1)
    x = _conv_block(x, 32, 1)
    x = _conv_block(x, 64, 2)
    x = _conv_block(x, 96, 2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="xray_cnn")
