"""Train from scratch, evaluate, export ONNX, apply the gate, register: ``python -m model.train``.

The same steps serve retraining (retrain/), which passes the model to start from; everything
after ``fit`` (evaluation, export, parity, gate, registration) is shared.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

import click
import numpy as np

from core.cli import registry_option
from core.config import ConfigError, describe, load_params, masked
from core.preprocess import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from model.dataset import DatasetError, scan_dataset
from model.gate import apply_gate, failure_message
from model.validation import groups_contact_sheet, validate_dataset
from monitoring.reference import REFERENCE_FILE, reference_bytes
from notify.outcome import tell
from notify.report import render_html
from registry.policy import check_text, gate_number
from registry.store import KERAS_FILE, MODEL_FILE, Registry
from storage import StorageError

# keras, TensorFlow and the modules of model/ that load them (devices, schedule, tfdata, evaluate,
# export, network, compare) are imported in the functions that use them: `--help` and a refused
# configuration answer without loading TensorFlow (tests/test_cli_help.py).

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "pillow")
REPORT_IMAGES = ("training_curves.png", "confusion_matrix.png")
GROUPS_IMAGE = "near_duplicate_groups.png"  # a report image only when the dataset has groups
GROUP_COUNTS = ("groups", "images_in_groups", "largest_group", "moved_images", "conflicts", "images_in_conflicts")
TEST_PREDICTIONS_FILE = "test_predictions.json"


class TrainingError(RuntimeError):
    """Training cannot start or its result cannot be registered; the message says why."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str:
    """The commit the code was trained from: GIT_COMMIT (set by CI), else ``git rev-parse``."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def load_training_data(params: dict):
    """Scan and validate the dataset; return (usable dataset, validation report)."""
    dataset = scan_dataset(params["dataset_uri"], params["classes"], params["data"]["split"],
                           cache_dir=params["cache_dir"])
    report, usable = validate_dataset(dataset, params)
    if not report["passed"]:
        raise TrainingError("data validation failed: " + "; ".join(report["problems"]))
    for item in report["corrupt"]:
        click.echo(f"skipping unreadable file {item['path']}: {item['error']}")
    if not usable.split("train") or not usable.split("test"):
        raise TrainingError(
            f"the train and test splits need images; found {len(usable.split('train'))} train and "
            f"{len(usable.split('test'))} test images: add images or change data.split"
        )
    return usable, report


def compile_for_training(model, rate, placement) -> None:
    """Compile ``model`` as training does: Adam at ``rate`` (a number or a schedule), loss scaling
    under mixed precision, XLA when ``placement`` says so, inside the model's strategy."""
    import keras

    from model.devices import is_mixed

    with model.distribute_strategy.scope():
        optimizer = keras.optimizers.Adam(learning_rate=rate)
        if is_mixed(model):  # float16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
            jit_compile=placement.xla,
        )


def configure_and_seed(params: dict):
    """Apply ``speed:`` (threads, GPUs) and seed every generator, before any model is built or loaded.

    TensorFlow takes thread settings only before its runtime starts, and Keras layers draw their
    seeds (dropout's) when they are built or loaded: both must come first for a run to repeat.
    Returns the :class:`~model.devices.Placement` decided.
    """
    import keras

    from model.devices import configure

    placement = configure(params["speed"])
    keras.utils.set_random_seed(params["train"]["seed"])
    return placement


def fit(model, usable, params: dict) -> tuple[object, dict]:
    """Fit ``model`` on the train split under ``train.lr_schedule`` (model/schedule.py).

    The model trains with the distribution strategy it was built under (model/devices.py), each
    replica taking ``train.batch_size`` images per step, with XLA when ``speed.xla`` says so. A
    model trained in mixed precision or under a strategy is returned as its float32 copy, the model
    that is exported and saved.
    """
    import dataclasses
    import math

    import tensorflow as tf

    from model.devices import configure, float32_copy, is_mixed
    from model.schedule import learning_rate
    from model.tfdata import make_tf_dataset

    data, train = params["data"], params["train"]
    strategy = model.distribute_strategy
    # What the model that trains really uses: a loaded model keeps the dtype it was saved with and
    # the strategy it was loaded under, whatever the settings decide now.
    placement = dataclasses.replace(configure(params["speed"]), mixed_precision=is_mixed(model),
                                    mirrored=isinstance(strategy, tf.distribute.MirroredStrategy))
    replicas = int(strategy.num_replicas_in_sync)
    size, batch = data["image_size"], train["batch_size"] * replicas
    train_examples = usable.split("train")
    rules = {"max_pixels": params["api"]["max_pixels"], "min_side": params["api"]["min_side"]}
    train_data = make_tf_dataset(usable, train_examples, size, batch, shuffle=True, seed=train["seed"], **rules)
    validation_examples = usable.split("validation")
    validation_data = (make_tf_dataset(usable, validation_examples, size, batch, **rules)
                       if validation_examples else None)
    monitor = "val_loss" if validation_data is not None else "loss"
    rate, callbacks = learning_rate(train, math.ceil(len(train_examples) / batch), monitor)
    mixed = is_mixed(model)
    click.echo(f"training on {placement.describe()}; {replicas} replica(s), global batch {batch}"
               f"{', float16 compute' if mixed else ''}")
    compile_for_training(model, rate, placement)
    started = time.monotonic()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=train["epochs"],
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=1 if sys.stdout.isatty() else 2,
    )
    seconds = round(time.monotonic() - started, 1)
    if mixed or strategy is not tf.distribute.get_strategy():
        model = float32_copy(model)
    curves = {key: [float(v) for v in values] for key, values in history.history.items()}
    epochs_run = len(curves.get("loss", []))
    # The epoch whose weights are the model: the last under a schedule, the restored best on plateaus.
    restored = train["lr_schedule"] == "plateau" and curves.get(monitor)
    best = int(np.argmin(curves[monitor])) + 1 if restored else epochs_run
    return model, {
        "epochs_run": epochs_run,
        "best_epoch": best,
        "seconds": seconds,
        "history": curves,
        "device": placement.describe(),
        "global_batch_size": batch,
    }


def evaluate_and_export(model, usable, params: dict) -> tuple[dict, dict, bytes, list[dict], np.ndarray, np.ndarray]:
    """Export ONNX; its metrics on the test split, its parity against Keras, and per test image
    what it predicted (the acceptance tests compare the served model with these, image by image).

    Returns ``(metrics, onnx record, onnx bytes, predictions, decoded test images, ONNX probabilities)``.
    """
    from model.evaluate import classification_metrics
    from model.export import ExportError, export_onnx, onnx_info, onnx_probabilities
    from model.tfdata import make_tf_dataset

    size = params["data"]["image_size"]
    examples = usable.split("test")
    test_data = make_tf_dataset(usable, examples, size, params["train"]["batch_size"],
                                max_pixels=params["api"]["max_pixels"], min_side=params["api"]["min_side"])
    batches = list(test_data.as_numpy_iterator())
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    keras_probabilities = model.predict(images, verbose=0)
    opset = params["export"]["opset"]
    try:
        onnx_bytes = export_onnx(model, size, opset)
    except ExportError as exc:
        raise TrainingError(str(exc)) from exc
    probabilities = onnx_probabilities(onnx_bytes, images)
    parity = float(np.abs(probabilities - keras_probabilities).max())
    metrics = classification_metrics(labels, probabilities, usable.classes)
    predictions = [
        {"path": e.path, "sha256": e.sha256, "label": e.label, "predicted": usable.classes[int(p.argmax())],
         "top_probability": round(float(p.max()), 6), "probabilities": [float(value) for value in p]}
        for e, p in zip(examples, probabilities)
    ]
    return metrics, onnx_info(onnx_bytes, opset, parity), onnx_bytes, predictions, images, probabilities


def production_now(registry: Registry | None, usable, decoded: dict, evaluated: dict | None = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE) -> dict | None:
    """The production model evaluated now on the same test images (champion/challenger), or None.

    ``evaluated`` is an evaluation of a registered model this run already made on ``usable`` (a
    retraining's base): reused when it is of the version in production now, not made again.
    """
    from model.compare import evaluate_registered

    pointer = registry.current() if registry is not None else None
    if pointer is None:
        return None
    if evaluated and (evaluated.get("version"), evaluated.get("stage")) == (pointer["version"], "production"):
        return evaluated
    return evaluate_registered(registry, pointer["version"], "production", usable, decoded, max_pixels, min_side)


def build_candidate(params: dict, kind: str = "train", start_from=None, parent: dict | None = None,
                    registry: Registry | None = None, data=None, extra: dict | None = None,
                    parent_evaluation: dict | None = None):
    """Train (or fine-tune the model ``start_from()`` loads), evaluate, export and gate; register nothing.

    ``start_from`` loads the model to fine-tune (retraining), called once the machine is configured
    and seeded; ``parent`` is the metadata of the version fine-tuned; ``registry`` is where the
    production model to compare with lives; ``data`` the (usable dataset, validation report) when
    the caller already loaded them; ``extra`` more metadata (retraining's key);
    ``parent_evaluation`` the parent evaluated on this data (see :func:`production_now`). Returns
    ``(metadata, files)``: the version's metadata without its name, and its files.
    """
    from model.evaluate import plot_confusion_matrix, plot_training_curves
    from model.network import build_network
    from model.reference import reference_statistics

    usable, report = data or load_training_data(params)
    groups = report.get("groups") or {}
    reports = list(REPORT_IMAGES) + ([GROUPS_IMAGE] if groups.get("groups") else [])
    configure_and_seed(params)
    model = start_from() if start_from else build_network(params["data"]["image_size"], len(params["classes"]),
                                                          speed=params["speed"])
    model, training = fit(model, usable, params)
    metrics, onnx_record, onnx_bytes, predictions, images, probabilities = evaluate_and_export(model, usable, params)
    reference = reference_statistics(usable, params, onnx_bytes, images, probabilities)
    production = production_now(registry, usable, {params["data"]["image_size"]: images}, parent_evaluation,
                                params["api"]["max_pixels"], params["api"]["min_side"])
    gate = apply_gate(metrics, onnx_record["parity_max_abs_diff"], params["gate"], production)
    metadata = {
        "kind": kind,
        "parent_version": parent["version"] if parent else None,
        "git_commit": git_commit(),
        "classes": usable.classes,
        "image_size": params["data"]["image_size"],
        "dataset": {
            "uri": usable.uri,
            "manifest_sha256": report["dataset"]["manifest_sha256"],
            "splits_sha256": report["dataset"].get("splits_sha256"),
            "class_counts": report["class_counts"],
            "split_counts": {s: sum(c.values()) for s, c in report["split_counts"].items()},
            "excluded_files": len(report["excluded"]),
            "groups": {key: groups[key] for key in GROUP_COUNTS if key in groups},
        },
        "params": masked({k: params[k] for k in ("classes", "data", "train", "export", "gate", "retrain")}),
        "metrics": metrics,
        "training": training,
        "gate": gate,
        "onnx": onnx_record,
        "test_predictions": {"file": TEST_PREDICTIONS_FILE, "images": len(predictions)},
        "monitoring": {"reference": REFERENCE_FILE, "train_images": reference.train.images,
                       "test_images": reference.test.images},
        "images": dict(params["images"]),
        "libraries": library_versions(),
        "reports": reports,
        **(extra or {}),
    }
    if parent:
        metadata["parent"] = {"version": parent["version"], "stage": parent.get("stage"),
                              "dataset_manifest_sha256": (parent.get("dataset") or {}).get("manifest_sha256")}
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        plot_training_curves(training["history"], work_dir / "training_curves.png")
        plot_confusion_matrix(metrics["confusion"], usable.classes, work_dir / "confusion_matrix.png")
        model.save(work_dir / KERAS_FILE)
        files = {name: (work_dir / name).read_bytes() for name in (KERAS_FILE, *REPORT_IMAGES)}
    if GROUPS_IMAGE in reports:
        files[GROUPS_IMAGE] = groups_contact_sheet(usable, report, params)
    files[MODEL_FILE] = onnx_bytes
    files[TEST_PREDICTIONS_FILE] = json.dumps(predictions, indent=1).encode()
    files[REFERENCE_FILE] = reference_bytes(reference)  # create-only, like every file before metadata.json
    return metadata, files


class GateFailed(TrainingError):
    """The candidate did not pass the quality gate; ``metadata`` is what it would have recorded."""

    def __init__(self, metadata: dict):
        super().__init__(failure_message(metadata["gate"]))
        self.metadata = metadata


def register_candidate(registry: Registry, metadata: dict, files: dict[str, bytes]) -> str:
    """Register a candidate that passed the gate in testing, with its (static) HTML report."""
    if not metadata["gate"]["passed"]:
        raise GateFailed(metadata)
    version = registry.claim_version()
    record = {**metadata, "version": version}
    report = render_html(record, images={name: name for name in metadata.get("reports", REPORT_IMAGES)}, status=False)
    return registry.register({**files, "report.html": report.encode()}, record, version=version)


def show_gate(gate: dict) -> None:
    """The gate table on the console, with the production model's value beside each check."""
    for check in gate["checks"]:
        verdict = "pass" if check["passed"] else "FAIL"
        beside = f" (production {gate_number(check['production_value'])})" if "production_value" in check else ""
        click.echo(f"gate {check_text(check)}: {verdict}{beside}")
    production = gate.get("production") or {}
    if production.get("comparable") is False:
        click.echo(f"gate: production {production['version']} not compared: {production['reason']}")


def run_step(params: dict, version_file: str | None, kind: str = "train", start_from=None,
             parent: dict | None = None, data=None, extra: dict | None = None,
             parent_evaluation: dict | None = None) -> str:
    """Build, gate and register a candidate; write its version to ``version_file``.

    Raises GateFailed (with the candidate's metadata) when the gate refuses it.
    """
    registry = Registry(params["registry_uri"])
    write_version_file(version_file, "")
    metadata, files = build_candidate(params, kind, start_from, parent, registry, data, extra, parent_evaluation)
    show_gate(metadata["gate"])
    version = register_candidate(registry, metadata, files)
    write_version_file(version_file, version)
    recalls = ", ".join(f"{name} recall {metadata['metrics']['recall'].get(name, 0):.4f}"
                        for name in params["gate"].get("min_recall") or {})
    click.echo(f"registered {version} in testing at {registry.uri}: accuracy {metadata['metrics']['accuracy']:.4f}"
               f"{', ' + recalls if recalls else ''}, ONNX parity {metadata['onnx']['parity_max_abs_diff']:.2g}")
    return version


def write_version_file(path: str | None, version: str) -> None:
    """Tell the next pipeline step which version was registered (an empty file: none)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(version + ("\n" if version else ""))


@click.command()
@click.option("--dataset", "dataset_uri", help="Dataset root (default: DATASET_URI / params.yaml).")
@registry_option
@click.option("--epochs", type=int, help="Maximum epochs (train.epochs); early stopping may end sooner.")
@click.option("--batch-size", type=int, help="Batch size (train.batch_size).")
@click.option("--image-size", type=int, help="Side of the network's square input (data.image_size).")
@click.option("--seed", type=int, help="Random seed (train.seed).")
@click.option("--version-file", type=click.Path(dir_okay=False),
              help="Write the registered version here (read by the next pipeline step).")
@click.option("--outcome-file", type=click.Path(dir_okay=False),
              help="When the gate refuses the candidate, note here that the product owner was told.")
def main(dataset_uri, registry_uri, epochs, batch_size, image_size, seed, version_file, outcome_file):
    """Train the classifier from scratch and register it in testing if it passes the gate.

    A failed gate check exits 1 naming the check, its value and threshold; nothing is registered,
    and the product owner gets an email with the candidate's report.

    Example: TRAIN_EPOCHS=3 python -m model.train --version-file .run/candidate-version
    """
    try:
        params = load_params({
            "dataset_uri": dataset_uri, "registry_uri": registry_uri, "train.epochs": epochs,
            "train.batch_size": batch_size, "data.image_size": image_size, "train.seed": seed,
        })
        click.echo(describe(params, "train", ("dataset_uri", "registry_uri", "classes", "data", "train",
                                              "export", "gate")))
        run_step(params, version_file)
    except GateFailed as exc:
        raise click.ClickException(f"{exc}; nothing was registered (email: {report_gate_failure(params, exc, outcome_file)})") from exc
    except (ConfigError, DatasetError, StorageError, TrainingError) as exc:
        raise click.ClickException(str(exc)) from exc


def report_gate_failure(params: dict, failure: GateFailed, outcome_file: str | None) -> str:
    """Email the product owner the refused candidate's report; return where the email went."""
    return tell(params, outcome_file, "training-failed-gate",
                f"A model trained from scratch failed the quality gate and was not registered: {failure}.",
                metadata=failure.metadata)


if __name__ == "__main__":
    main(prog_name="python -m model.train")
