"""The training benchmark: how fast the network trains from each input path, how close that is to
the machine's arithmetic, and how long `make train` takes to a model that passes the gate.

- Input paths, each one pass over the train split with ``model.fit`` (the network of
  model/network.py, compiled as ``model.train.fit`` compiles it, on the placement of
  model/devices.py), interleaved over ``ROUNDS`` rounds, the best round counting:
  the tf.data pipeline reading and decoding the PNGs (a fresh pipeline: every image is decoded
  during the pass), the same pipeline gathering from the decoded cache, and the same batches
  already in memory (the ceiling for the network on this machine). Their ratio to the ceiling is
  the input efficiency (target >= ``TARGET_INPUT_RATIO``).
- Achieved GFLOP/s: the network's training FLOPs per image (3x the forward multiply-adds x 2 of its
  convolutions and dense layers: forward, gradient of the input, gradient of the weights) times the
  in-memory images/s, against a float32 matrix product measured in the same run.
- ``make train``: ``python -m model.train`` in a subprocess, with a fresh registry and an empty
  ``cache_dir`` under ``.run/bench/`` (so it decodes every image once, as the first run on a
  dataset version does; a ``gs://`` dataset is downloaded again), timed from start to exit; its
  gate verdict, epochs and test accuracy come from the version it registered.

The dataset: ``dataset_uri`` when it exists, else the sample dataset (params ``sample_data:``) written
to ``.run/bench/sample-data``. Quick mode: a tiny sample dataset, 32 px, one epoch and the gate
opened; its numbers mean nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.config import REPO_ROOT
from core.preprocess import image_bytes_to_array
from model.dataset import scan_dataset
from model.decoded_cache import DecodedDataset
from model.sample_data import dataset_settings, ensure_sample_dataset
from model.validation import validate_dataset
from registry.store import Registry
from storage import is_gcs

BENCH_DIR = REPO_ROOT / ".run" / "bench"
ROUNDS = 2
TARGET_INPUT_RATIO = 0.90
MATMUL_SIZE, QUICK_MATMUL_SIZE = 2048, 256
QUICK = {"images_per_class": 12, "sample_size": 64, "image_size": 32}


class BenchError(RuntimeError):
    """The benchmark cannot run: no dataset, or `make train` could not be started."""


def bench_params(params: dict, quick: bool, work: Path) -> dict:
    """``params`` pointed at the benchmark's dataset (quick: a tiny one under ``work``, cached there)."""
    params = json.loads(json.dumps(params))
    uri = params["dataset_uri"]
    if quick:
        root = work / "tiny-data"
        settings = {**dataset_settings(params), "images_per_class": QUICK["images_per_class"],
                    "image_size": QUICK["sample_size"]}
        ensure_sample_dataset(root, settings, if_missing=True)
        params["dataset_uri"] = str(root)
        params["data"]["image_size"] = QUICK["image_size"]
        params["data"]["min_images_per_class"] = 1
        params["cache_dir"] = str(work / "cache")
        params["speed"]["decoded_cache_min_images"] = 0
    elif not is_gcs(uri) and not (Path(uri).is_dir() and any(Path(uri).iterdir())):
        root = BENCH_DIR / "sample-data"
        ensure_sample_dataset(root, dataset_settings(params), if_missing=True)
        params["dataset_uri"] = str(root)
    return params


def training_flops_per_image(model) -> float:
    """3x the forward FLOPs (2 per multiply-add) of the convolutions and dense layers, per image."""
    import keras

    forward = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            kernel_height, kernel_width, inputs, _ = layer.kernel.shape
            forward += 2 * height * width * channels * kernel_height * kernel_width * inputs
        elif isinstance(layer, keras.layers.Dense):
            forward += 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    return 3.0 * forward


def matmul_gflops(size: int, seconds: float) -> float:
    """GFLOP/s of a float32 ``size`` x ``size`` matrix product on TensorFlow's threads."""
    import tensorflow as tf

    a = tf.random.uniform((size, size), dtype=tf.float32)
    b = tf.random.uniform((size, size), dtype=tf.float32)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    product(a, b).numpy()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        product(a, b).numpy()
        count += 1
    return 2.0 * size**3 * count / (time.perf_counter() - started) / 1e9


def input_paths(params: dict):
    """The usable dataset without and with its decoded images, the train examples, the batch size."""
    dataset = scan_dataset(params["dataset_uri"], params["classes"], params["data"]["split"],
                           cache_dir=params["cache_dir"], progress=False)
    _, decoded = validate_dataset(dataset, params, progress=False)
    # The same usable examples on the scanned dataset, which carries no decoded images.
    plain = dataset.with_examples(decoded.examples)
    return plain, decoded, decoded.split("train")


def measure_inputs(params: dict, rounds: int):
    """Images/s of one training pass from each input path; the model; the images per pass; the
    placement; the CPU ms of decoding one image; TensorFlow's threads."""
    # TensorFlow and the modules that load it only when this section runs (`--help` stays fast).
    import keras
    import numpy as np
    import tensorflow as tf

    from model.devices import configure
    from model.network import build_network
    from model.tfdata import make_tf_dataset
    from model.train import compile_for_training

    placement = configure(params["speed"])
    plain, decoded, train = input_paths(params)
    if not isinstance(decoded, DecodedDataset):
        raise BenchError("the decoded cache did not take the dataset (was a file changed during the run?)")
    size, batch, seed = params["data"]["image_size"], params["train"]["batch_size"], params["train"]["seed"]
    keras.utils.set_random_seed(seed)
    model = build_network(size, len(params["classes"]), speed=params["speed"])
    compile_for_training(model, 1e-3, placement)
    batches = list(make_tf_dataset(decoded, train, size, batch, shuffle=True, seed=seed).as_numpy_iterator())
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    pipelines = {
        "png": lambda: make_tf_dataset(plain, train, size, batch, shuffle=True, seed=seed),
        "cache": lambda: make_tf_dataset(decoded, train, size, batch, shuffle=True, seed=seed),
        "memory": lambda: tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch),
    }
    model.fit(pipelines["memory"](), epochs=1, verbose=0, shuffle=False)  # trace and warm up
    best = {name: 0.0 for name in pipelines}
    for _ in range(rounds):
        for name, pipeline in pipelines.items():
            data = pipeline()
            started = time.perf_counter()
            model.fit(data, epochs=1, verbose=0, shuffle=False)
            best[name] = max(best[name], len(train) / (time.perf_counter() - started))
    decode_ms = decode_cpu_ms(plain, train, size)
    return best, model, len(train), placement.describe(), decode_ms, placement.threads


def decode_cpu_ms(dataset, examples, image_size: int, limit: int = 200) -> float:
    """CPU ms to read and decode one image with the shared decoder (core/preprocess.py), one thread."""
    sample = examples[:limit]
    started = time.process_time()
    for example in sample:
        image_bytes_to_array(dataset.read_bytes(example.path), image_size)
    return (time.process_time() - started) / max(1, len(sample)) * 1000


def time_make_train(params: dict, quick: bool, work: Path) -> dict:
    """Run ``python -m model.train`` as `make train` does, on a fresh registry and an empty cache."""
    registry = work / "registry"
    env = {**os.environ, "DATASET_URI": params["dataset_uri"], "REGISTRY_URI": str(registry),
           "CACHE_DIR": str(work / "train-cache"), "OUTBOX_DIR": str(work / "outbox"), "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if quick:
        env.update(TRAIN_EPOCHS="1", DATA_IMAGE_SIZE=str(QUICK["image_size"]), DATA_MIN_IMAGES_PER_CLASS="1",
                   GATE_MIN_ACCURACY="0", GATE_MIN_RECALL_COVID="0")
    started = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "model.train"], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"make train did not finish: {exc}") from exc
    seconds = time.perf_counter() - started
    versions = Registry(str(registry)).versions("testing") if result.returncode == 0 else []
    if not versions:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"seconds": seconds, "passed": False, "why": last}
    metadata = Registry(str(registry)).metadata(versions[-1])
    return {"seconds": seconds, "passed": metadata["gate"]["passed"], "epochs": metadata["training"]["epochs_run"],
            "accuracy": metadata["metrics"]["accuracy"], "fit_seconds": metadata["training"]["seconds"]}


def row(measure: str, value: float, unit: str, ratio: float | None, note: str) -> dict:
    return {"measure": measure, "value": round(value, 1), "unit": unit,
            "ratio": None if ratio is None else round(ratio, 2), "note": note}


def run(params: dict, quick: bool) -> dict:
    """Measure the input paths and the arithmetic, then time `make train` to a gate-passing model."""
    load_before = os.getloadavg()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BENCH_DIR, prefix="training-") as folder:
        work = Path(folder)
        params = bench_params(params, quick, work)
        rates, model, images, placement, decode_ms, threads = measure_inputs(params, 1 if quick else ROUNDS)
        flops = training_flops_per_image(model)
        matmul = QUICK_MATMUL_SIZE if quick else MATMUL_SIZE
        reference = matmul_gflops(matmul, 0.2 if quick else 2.0)
        train = time_make_train(params, quick, work)
    ceiling = rates["memory"]
    achieved = flops * ceiling / 1e9
    train_ms = 1000 * max(1, threads) / ceiling  # CPU per image when training keeps every thread busy
    bound = train_ms / (train_ms + decode_ms)
    target = f"target >= {TARGET_INPUT_RATIO:.2f}"
    rows = [
        row("tf.data from PNG (decode every image)", rates["png"], "img/s", rates["png"] / ceiling,
            f"of in memory; {target}: {'met' if rates['png'] / ceiling >= TARGET_INPUT_RATIO else 'MISSED'}"),
        row("tf.data from the decoded cache", rates["cache"], "img/s", rates["cache"] / ceiling,
            f"of in memory; {target}: {'met' if rates['cache'] / ceiling >= TARGET_INPUT_RATIO else 'MISSED'}"),
        row("same batches in memory (ceiling)", ceiling, "img/s", 1.0, "the network alone on this machine"),
        row("training arithmetic, in memory", achieved, "GFLOP/s", achieved / reference,
            f"of the matrix product; {flops / 1e9:.3f} GFLOP per image"),
        row(f"float32 matmul {matmul}x{matmul} (reference)", reference, "GFLOP/s",
            1.0, "same threads, same run"),
    ]
    if train["passed"]:
        rows.append(row("make train to a gate-passing model", train["seconds"], "s", None,
                        f"{train['epochs']} epoch{'s' if train['epochs'] != 1 else ''} "
                        f"({train['fit_seconds']:.0f} s fitting), "
                        f"test accuracy {train['accuracy']:.4f}, empty decoded cache"))
    else:
        rows.append(row("make train to a gate-passing model", train["seconds"], "s", None,
                        f"no gate-passing model: {train.get('why', 'gate failed')}"))
    return {
        "title": "Training: input paths against the in-memory ceiling, arithmetic, time to a gate-passing model",
        "rows": rows,
        "notes": [
            f"dataset {params['dataset_uri']}; {images} training images per pass at {params['data']['image_size']} px, "
            f"batch {params['train']['batch_size']}; best of {1 if quick else ROUNDS} interleaved rounds",
            f"placement: {placement}",
            f"decoding one image costs {decode_ms:.1f} ms of CPU (core/preprocess.py, one thread) and training "
            f"one about {train_ms:.1f} ms ({max(1, threads)} threads / {ceiling:.0f} img/s): where training keeps "
            f"every core busy, decoding during the pass bounds the PNG path at {bound:.2f} of the ceiling; "
            "`make train` reads the decoded cache, and the PNG pipeline decodes in its first epoch only",
            f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores"
            + ("; quick mode: the numbers mean nothing" if quick else ""),
        ],
    }
