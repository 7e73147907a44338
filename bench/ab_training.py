"""Time to a gate-passing model, before and after, in one run: ``python -m bench.ab_training``.

The "before" arm is a commit (by default ``BASE_COMMIT`` b312164, the main that issue 9, the training
speed-up, started from; the "Training speed" figures of docs/measurements.md compare against it) checked out with
``git worktree add --detach`` into a temporary folder; the "after" arm is this working tree. Both
run ``python -m model.train`` (what `make train` runs) with this interpreter on the same dataset,
each with a fresh registry and an empty ``cache_dir`` (so each decodes every image, as the first
run on a dataset version does), alternating A B, then B A, round after round, so that both arms
see the same machine load. Each run is timed from start to exit; the gate verdict, epochs and test
accuracy come from the version it registered. The table gives each run and, per arm, the median,
and the after/before ratio of the medians; load averages before and after each run are listed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from core.cli import params_or_exit
from core.config import REPO_ROOT
from registry.store import Registry

BASE_COMMIT = "b312164"


class AbError(RuntimeError):
    """The comparison cannot run: no such commit, no dataset, git failing."""


def git(*args: str, cwd: Path = REPO_ROOT) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AbError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def rgb_copy(source: Path, target: Path, share: float) -> int:
    """Copy the dataset at ``source`` to ``target`` with ``share`` of its images (a stable choice by
    path) re-saved as RGB PNGs with a mild colour cast, as some of the Kaggle images are RGB."""
    import hashlib

    from PIL import Image

    converted = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        point = int.from_bytes(hashlib.sha256(relative.as_posix().encode()).digest()[:8], "big") / 2**64
        if path.suffix.lower() == ".png" and point < share:
            with Image.open(path) as image:
                gray = image.convert("L")
            cast = Image.merge("RGB", [gray.point(lambda v, f=f: min(255, round(v * f))) for f in (1.0, 0.96, 0.92)])
            cast.save(out)
            converted += 1
        else:
            shutil.copyfile(path, out)
    return converted


def train_once(arm: str, code: Path, dataset: str, work: Path, extra_env: dict[str, str]) -> dict:
    """One ``python -m model.train`` run of the code at ``code``; what it took and what it registered."""
    registry, cache = work / "registry", work / "cache"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRAIN_", "DATA_", "SPEED_", "GATE_"))}
    env.update(DATASET_URI=dataset, REGISTRY_URI=str(registry), CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1",
               TF_CPP_MIN_LOG_LEVEL="2", **extra_env)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "model.train"], cwd=code, env=env, capture_output=True, text=True,
                            timeout=4 * 3600)
    seconds = time.perf_counter() - started
    (work / "train.log").write_text(result.stdout + "\n" + result.stderr)
    run = {"arm": arm, "seconds": round(seconds, 1), "exit": result.returncode, "load_before": round(load_before, 2),
           "load_after": round(os.getloadavg()[0], 2), "log": str(work / "train.log")}
    versions = Registry(str(registry)).versions("testing") if result.returncode == 0 else []
    if versions:
        metadata = Registry(str(registry)).metadata(versions[-1])
        run.update(passed=metadata["gate"]["passed"], accuracy=metadata["metrics"]["accuracy"],
                   covid_recall=metadata["metrics"]["recall"].get("COVID"), epochs=metadata["training"]["epochs_run"],
                   fit_seconds=metadata["training"]["seconds"], test_images=metadata["metrics"]["test_images"])
    else:
        run.update(passed=False, why=(result.stderr.strip().splitlines() or ["no output"])[-1])
    return run


def summary(runs: list[dict]) -> dict:
    """Per arm: median seconds, epochs, accuracies; and after/before of the median seconds."""
    arms = {}
    for arm in ("before", "after"):
        mine = [r for r in runs if r["arm"] == arm]
        passed = [r for r in mine if r["passed"]]
        arms[arm] = {
            "runs": len(mine),
            "gate_passed": len(passed),
            "median_seconds": statistics.median(r["seconds"] for r in mine) if mine else None,
            "epochs": sorted({r["epochs"] for r in passed}),
            "accuracy": [r["accuracy"] for r in passed],
            "median_accuracy": statistics.median(r["accuracy"] for r in passed) if passed else None,
        }
    before, after = arms["before"]["median_seconds"], arms["after"]["median_seconds"]
    arms["time_ratio"] = round(after / before, 3) if before and after else None
    b, a = arms["before"]["median_accuracy"], arms["after"]["median_accuracy"]
    arms["accuracy_points"] = round((a - b) * 100, 2) if a is not None and b is not None else None
    return arms


def format_report(runs: list[dict], totals: dict, header: list[str]) -> str:
    lines = [*header, "", f"{'#':>2}  {'arm':<6}  {'seconds':>8}  {'gate':>4}  {'epochs':>6}  {'accuracy':>8}  "
             f"{'COVID recall':>12}  {'fit s':>6}  load before/after"]
    for number, run in enumerate(runs, 1):
        if run["passed"]:
            lines.append(f"{number:>2}  {run['arm']:<6}  {run['seconds']:>8.1f}  {'pass':>4}  {run['epochs']:>6}  "
                         f"{run['accuracy']:>8.4f}  {run['covid_recall']:>12.4f}  {run['fit_seconds']:>6.0f}  "
                         f"{run['load_before']:.2f} / {run['load_after']:.2f}")
        else:
            lines.append(f"{number:>2}  {run['arm']:<6}  {run['seconds']:>8.1f}  {'FAIL':>4}  {run.get('why', '')}")
    lines.append("")
    for arm in ("before", "after"):
        t = totals[arm]
        accuracy = f"{t['median_accuracy']:.4f}" if t["median_accuracy"] is not None else "-"
        lines.append(f"{arm:<6}: median {t['median_seconds']:.1f} s over {t['runs']} run(s), gate passed "
                     f"{t['gate_passed']}/{t['runs']}, epochs {t['epochs']}, median test accuracy {accuracy}")
    if totals["time_ratio"] is not None:
        lines.append(f"after/before time to a gate-passing model: {totals['time_ratio']:.3f} "
                     f"(target <= 0.5); test accuracy after - before: {totals['accuracy_points']:+.2f} points "
                     "(target >= -0.5)")
    return "\n".join(lines)


@click.command()
@click.option("--base", default=BASE_COMMIT, show_default=True, help="The commit of the 'before' arm.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rounds; each runs both arms, in alternating order (A B, then B A).")
@click.option("--dataset", "dataset_uri", help="Dataset root (default: DATASET_URI / params.yaml).")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="An environment variable for both arms' training (e.g. TRAIN_EPOCHS=1); repeatable.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the runs and the summary to this JSON file.")
@click.option("--rgb-share", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Train both arms on a copy of the dataset with this share of the images made RGB "
                   "(a mild colour cast), as in the real dataset; local datasets only.")
@click.option("--keep", is_flag=True, help="Keep the work folder (registries, logs) instead of removing it.")
def main(base, rounds, dataset_uri, settings, rgb_share, json_path, keep):
    """Compare the time to a gate-passing model of the BASE commit and of this working tree, in one run.

    Both arms train on the same dataset with this interpreter, alternating, each from an empty
    cache into a fresh registry. Timings compare only within one run; the table lists the load.

    \b
    Example:
      python -m bench.ab_training --rounds 1 --json .run/ab-training.json
    """
    params = params_or_exit({"dataset_uri": dataset_uri})
    dataset = params["dataset_uri"]
    if "://" not in dataset:
        dataset = str(Path(dataset).resolve())
        if not Path(dataset).is_dir():
            raise click.ClickException(f"no dataset at {dataset}: run `make data` first")
    extra_env = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise click.ClickException(f"--set takes NAME=VALUE, got {setting!r}")
        extra_env[name] = value
    if rgb_share and "://" in dataset:
        raise click.ClickException("--rgb-share needs a local dataset")
    work = Path(tempfile.mkdtemp(prefix="ab-training-"))
    base_tree = work / "before-code"
    try:
        if rgb_share:
            converted = rgb_copy(Path(dataset), work / "dataset-rgb", rgb_share)
            dataset = str(work / "dataset-rgb")
            click.echo(f"training on a copy with {converted} images made RGB: {dataset}")
        commit = git("rev-parse", "--verify", f"{base}^{{commit}}")
        git("worktree", "add", "--detach", str(base_tree), commit)
        head = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain") else "")
        header = [f"A/B of time to a gate-passing model: before = {commit[:7]}, after = {head}",
                  f"dataset {dataset}; machine {platform.node()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
                  f"python {platform.python_version()}" + (f"; settings {extra_env}" if extra_env else ""),
                  f"uptime at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"]
        click.echo("\n".join(header))
        runs = []
        for round_number in range(rounds):
            order = ("before", "after") if round_number % 2 == 0 else ("after", "before")
            for arm in order:
                code = base_tree if arm == "before" else REPO_ROOT
                run_dir = work / f"{round_number + 1}-{arm}"
                run_dir.mkdir()
                click.echo(f"round {round_number + 1}: training the {arm} arm ...")
                run = train_once(arm, code, dataset, run_dir, extra_env)
                click.echo(f"  {run['seconds']:.1f} s, gate {'passed' if run['passed'] else 'FAILED'}"
                           + (f", accuracy {run['accuracy']:.4f}, epochs {run['epochs']}" if run["passed"] else ""))
                runs.append(run)
        header.append(f"uptime at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        totals = summary(runs)
        click.echo("\n" + format_report(runs, totals, header))
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"header": header, "runs": runs, "summary": totals}, indent=2))
    except AbError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if base_tree.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO_ROOT,
                           capture_output=True, timeout=120)
        if keep:
            click.echo(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(prog_name="python -m bench.ab_training")
