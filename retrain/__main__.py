"""Retrain: fine-tune the production model (else the newest tested testing one) on the current
dataset, with the training code's evaluation, export, gate and registration: ``python -m retrain``.

Outcomes, each told to the product owner (except "nothing new to learn", which is a no-op):

- nothing new to learn: the base was trained on this dataset version, or this exact retraining
  (base, dataset version, code, settings) was done before; exit 0, no email, unless ``--force``;
- still good: the base still reaches ``retrain.min_accuracy`` on the current test split and
  ``retrain.skip_if_base_passes`` is set; the evaluation is recorded on the base; exit 0;
- a candidate passed the gate: registered (kind ``retrain``), its version written for the
  acceptance tests and the report that follow; exit 0;
- poor model (the candidate failed the gate), no model to retrain, or a base that does not fit
  the settings: an email, exit 1.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from core.config import REPO_ROOT, ConfigError, describe, load_params
from model.dataset import DatasetError
from model.train import GateFailed, TrainingError, load_training_data, run_step, write_version_file
from notify.outcome import tell
from registry.store import KERAS_FILE, Registry, RegistryError, utc_now
from retrain.base import Base, NoBase, choose_base, incompatibilities, retrain_key
from storage import StorageError

INDEX_KIND = "retrain"


def retraining_params(params: dict) -> dict:
    """The training settings with retraining's own learning rate, epochs and patience."""
    settings = params["retrain"]
    train = {**params["train"], "epochs": settings["epochs"], "learning_rate": settings["learning_rate"],
             "early_stopping_patience": settings["early_stopping_patience"]}
    return {**params, "train": train}


def load_keras(registry: Registry, base: Base, speed: dict):
    """The base's Keras model, loaded in the distribution strategy ``speed`` decides (model/devices.py).

    Call it once the machine is configured and seeded (model.train.configure_and_seed): its
    dropout layers draw their seeds here.
    """
    import keras

    from model.devices import configure

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / KERAS_FILE
        path.write_bytes(registry.read_file(base.version, KERAS_FILE, base.stage))
        with configure(speed).strategy().scope():
            return keras.models.load_model(path)


class Outcome(Exception):
    """How the run ended: ``code`` is the exit status, ``message`` what is printed."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def retrain(params: dict, force: bool, version_file: str | None, outcome_file: str | None) -> str:
    """Run one retraining; raise Outcome with the exit status and what to print."""
    registry = Registry(params["registry_uri"])
    write_version_file(version_file, "")
    try:
        base = choose_base(registry)
    except NoBase as exc:
        where = tell(params, outcome_file, "no-model", str(exc) + ".")
        raise Outcome(1, f"{exc} (email: {where})") from exc
    problems = incompatibilities(base, params)
    if problems:
        why = f"{base.version} ({base.stage}) cannot be fine-tuned with the current settings: " + "; ".join(problems)
        where = tell(params, outcome_file, "incompatible-base", why + ". Train from scratch with `make pipeline`.")
        raise Outcome(1, f"{why} (email: {where})")
    usable, report = load_training_data(params)
    dataset = report["dataset"]["manifest_sha256"]
    key = retrain_key(base.version, dataset, params, REPO_ROOT)
    click.echo(f"base: {base.version} ({base.stage}); dataset version {dataset[:12]}; retraining key {key[:12]}")
    if not force:
        if (base.metadata.get("dataset") or {}).get("manifest_sha256") == dataset:
            raise Outcome(0, f"nothing new to learn: {base.version} was trained on this dataset version "
                             f"({dataset[:12]}); FORCE=1 retrains anyway")
        seen = registry.index_get(INDEX_KIND, key)
        if seen:
            raise Outcome(0, f"nothing new to learn: this retraining of {base.version} on dataset {dataset[:12]} "
                             f"was done at {seen['at']} ({seen['outcome']}: {seen.get('version') or '-'}); "
                             "FORCE=1 retrains anyway")
    return fine_tune_or_keep(params, registry, base, usable, report, key, version_file, outcome_file)


def fine_tune_or_keep(params, registry, base, usable, report, key, version_file, outcome_file) -> str:
    from model.compare import evaluate_registered  # onnxruntime and matplotlib: only when a base is compared

    settings, dataset = params["retrain"], report["dataset"]["manifest_sha256"]
    evaluation = evaluate_registered(registry, base.version, base.stage, usable,
                                     max_pixels=params["api"]["max_pixels"], min_side=params["api"]["min_side"])
    accuracy = evaluation["metrics"]["accuracy"]
    click.echo(f"{base.version} ({base.stage}) on the current test split: accuracy {accuracy:.4f} on "
               f"{evaluation['test_images']} images (retrain.min_accuracy {settings['min_accuracy']})")
    facts = {"base": f"{base.version} ({base.stage})", "dataset version": dataset,
             "base accuracy now": f"{accuracy:.4f} on {evaluation['test_images']} test images",
             "retrain.min_accuracy": settings["min_accuracy"]}
    if accuracy >= settings["min_accuracy"] and settings["skip_if_base_passes"]:
        registry.record_evaluation(base.version, {
            "at": utc_now(), "dataset_manifest_sha256": dataset, "retrain_key": key,
            "test_images": evaluation["test_images"], "metrics": evaluation["metrics"], "verdict": "still good"})
        registry.index_put(INDEX_KIND, key, {"outcome": "base still good", "version": base.version, "at": utc_now()})
        kind = f"{base.stage}-still-good"
        who = "production" if base.stage == "production" else "the testing model"
        headline = (f"{who} {base.version} is still good on the new data: accuracy {accuracy:.4f} >= "
                    f"{settings['min_accuracy']} on the current test split; nothing was retrained.")
        where = tell(params, outcome_file, kind, headline, facts=facts)
        raise Outcome(0, f"{headline} (email: {where})")
    extra = {"retrain_key": key, "base_evaluation": {"version": base.version, "accuracy": accuracy,
                                                     "test_images": evaluation["test_images"]}}
    try:
        version = run_step(retraining_params(params), version_file, kind="retrain", start_from=lambda: load_keras(registry, base, params["speed"]),
                           parent={**base.metadata, "stage": base.stage}, data=(usable, report), extra=extra,
                           parent_evaluation=evaluation)
    except GateFailed as exc:
        registry.index_put(INDEX_KIND, key, {"outcome": "poor model", "version": None, "at": utc_now()})
        headline = f"retraining {base.version} ({base.stage}) produced a poor model, not registered: {exc}"
        where = tell(params, outcome_file, "poor-model", headline, metadata=exc.metadata, facts=facts)
        raise Outcome(1, f"{headline} (email: {where})") from exc
    registry.index_put(INDEX_KIND, key, {"outcome": "registered", "version": version, "at": utc_now()})
    return version


@click.command()
@click.option("--force", is_flag=True, help="Retrain even when there is nothing new to learn.")
@click.option("--version-file", type=click.Path(dir_okay=False),
              help="Write the registered version here (empty when none was registered).")
@click.option("--outcome-file", type=click.Path(dir_okay=False),
              help="Write which outcome was emailed here (read by the pipeline runner).")
def main(force, version_file, outcome_file):
    """Fine-tune production (else the newest tested testing model) on the current dataset.

    Exits 0 when a candidate was registered, when the base is still good, or when there is nothing
    new to learn; 1 for a poor model or no model to retrain (the product owner gets an email), and
    1 whenever the email telling an outcome could not be delivered.

    Example: RETRAIN_SKIP_IF_BASE_PASSES=false python -m retrain --version-file .run/candidate-version
    """
    try:
        params = load_params()
        click.echo(describe(params, "retrain", ("dataset_uri", "registry_uri", "classes", "data", "retrain",
                                                "gate")))
        version = retrain(params, force, version_file, outcome_file)
    except Outcome as outcome:
        if outcome.code:
            raise click.ClickException(outcome.message) from None
        click.echo(outcome.message)
        return
    except (ConfigError, DatasetError, StorageError, RegistryError, TrainingError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"retrained candidate {version} registered; next: its acceptance tests and report")


if __name__ == "__main__":
    main(prog_name="python -m retrain")
