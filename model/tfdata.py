"""The tf.data input pipeline: decoded images (from the decoded cache, or read and decoded here with
the shared code), shuffle, batch, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from core.preprocess import DEFAULT_MAX_PIXELS, image_bytes_to_array
from model.dataset import Dataset, Example
from model.decoded_cache import decoded_rows


def make_tf_dataset(
    dataset: Dataset,
    examples: list[Example],
    image_size: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tf.data.Dataset:
    """Batches of ``(images, label indices)`` for ``examples``, in their order unless ``shuffle``.

    When ``dataset`` carries its images decoded at ``image_size`` (model/decoded_cache.py, attached
    by data validation), batches are gathered from them: no file is read or decoded. Otherwise each
    file is decoded through core/preprocess.py, the same code the API runs, so training and serving
    see identical pixels, and kept in memory after the first epoch. Both give the same batches.
    ``max_pixels`` is the pixel budget validation applied (``api.max_pixels``).
    """
    labels = np.array([dataset.classes.index(e.label) for e in examples], dtype=np.int32)
    rows = decoded_rows(dataset, examples, image_size)
    if rows is not None:
        return _from_decoded(dataset.decoded.images, rows, labels, image_size, batch_size, shuffle, seed)
    paths = [e.path for e in examples]

    def load(path: bytes) -> np.ndarray:
        return image_bytes_to_array(dataset.read_bytes(path.decode()), image_size, max_pixels=max_pixels)

    def decode(path, label):
        image = tf.numpy_function(load, [path], tf.float32, stateful=False)
        image.set_shape((image_size, image_size, 1))
        return image, label

    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    data = data.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if shuffle:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _from_decoded(images: np.ndarray, rows: np.ndarray, labels: np.ndarray, image_size: int,
                  batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """Batches gathered from the uint8 ``images`` (memory-mapped): one gather per batch, the
    shuffle order of the decoding path (same seed, same element count)."""

    def gather(batch_rows: np.ndarray) -> np.ndarray:
        return np.asarray(images[batch_rows])

    def to_input(batch_rows, batch_labels):
        pixels = tf.numpy_function(gather, [batch_rows], tf.uint8, stateful=False)
        pixels.set_shape((None, image_size, image_size))
        # The division of core/preprocess.py's to_array, in float32: bit for bit the same input.
        return tf.expand_dims(tf.cast(pixels, tf.float32) / 255.0, -1), batch_labels

    data = tf.data.Dataset.from_tensor_slices((rows, labels))
    if shuffle:
        data = data.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).map(to_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return data.prefetch(tf.data.AUTOTUNE)
