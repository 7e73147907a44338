"""The tf.data input pipeline: read, decode and resize (shared code), cache, shuffle, batch, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model.dataset import Dataset, Example
from model.preprocess import image_bytes_to_array


def make_tf_dataset(
    dataset: Dataset,
    examples: list[Example],
    image_size: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ``(images, label indices)`` for ``examples``, in their order unless ``shuffle``.

    Decoding goes through model/preprocess.py, the same code the API runs, so training and
    serving see identical pixels. Decoded images are cached in memory after the first epoch.
    """
    paths = [e.path for e in examples]
    labels = np.array([dataset.classes.index(e.label) for e in examples], dtype=np.int32)

    def load(path: bytes) -> np.ndarray:
        return image_bytes_to_array(dataset.read_bytes(path.decode()), image_size)

    def decode(path, label):
        image = tf.numpy_function(load, [path], tf.float32, stateful=False)
        image.set_shape((image_size, image_size, 1))
        return image, label

    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    data = data.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if shuffle:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
