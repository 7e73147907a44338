"""The report of ``make monitor``: a plot of reference vs live histograms, JSON, and the alarm email's text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the CronJob has no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from monitoring.reference import Reference  # noqa: E402
from monitoring.stats import INPUT_NAMES, Stats  # noqa: E402

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
PREDICTION_NAMES = ("class", "confidence", "margin", "ood_score")
DESCRIPTIONS = {
    "mean": "mean intensity of the images (darker or brighter images, another windowing)",
    "std": "contrast (standard deviation of intensity)",
    "near_black": "share of near-black pixels (borders, collimation, exposure)",
    "near_white": "share of near-white pixels (burnt-out areas, inverted images)",
    "intensity": "intensity histogram of all pixels",
    "width": "image width as sent (another scanner or export setting)",
    "height": "image height as sent",
    "aspect": "aspect ratio (width / height) as sent",
    "bit_depth": "bits per sample as sent (8-bit vs 16-bit exports)",
    "mode": "image mode as sent (gray, RGB, 16-bit gray...)",
    "class": "predicted-class distribution (another patient mix, or the model answering differently)",
    "low_confidence_excess": "share of low-confidence answers above the test split's",
    "ood_share": "share of images flagged out of distribution (not chest radiographs like the training data)",
}


def _describe(check_name: str) -> str:
    key = check_name[4:-1] if check_name.startswith("psi[") else check_name
    return DESCRIPTIONS.get(key, key)


def _labels(histogram: Mapping) -> list[str]:
    if "categories" in histogram:
        return list(histogram["categories"])
    edges = histogram["edges"]
    return [f"<{b:g}" if a is None else f">={a:g}" if b is None else f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])]


def plot(path: Path, live: Stats, reference: Reference | None, verdict: Mapping, title: str) -> None:
    """Reference (training split for inputs, training sample and test split for answers) vs live shares, one panel per
    statistic; a panel whose check crossed its threshold has a red title."""
    values = {entry["name"]: entry for entry in verdict.get("checks", [])}
    names = list(INPUT_NAMES) + list(PREDICTION_NAMES)
    columns = 4
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(13, 2.4 * rows), dpi=70)
    live_json = live.to_json()["histograms"]
    for axis, name in zip(axes.flat, names):
        live_counts = live.histogram(name).astype(float)
        bins = np.arange(live_counts.size + 1)
        if reference is not None:
            source = reference.answers() if name in PREDICTION_NAMES else reference.train
            counts = source.histogram(name).astype(float)
            axis.stairs(counts / max(counts.sum(), 1), bins, fill=True, color="tab:blue", alpha=0.45,
                        label="reference")
        axis.stairs(live_counts / max(live_counts.sum(), 1), bins, color="tab:orange", linewidth=1.6, label="live")
        labels = _labels(live_json[name])
        step = max(1, len(labels) // 6)
        axis.set_xticks(bins[:-1][::step] + 0.5, labels[::step], fontsize=6, rotation=30)
        axis.tick_params(axis="y", labelsize=6)
        check = values.get(f"psi[{name}]")
        heading = f"{name}" + (f"  PSI {check['value']:.2f}" if check else "")
        axis.set_title(heading, fontsize=8, color="red" if check and check["drift"] else "black")
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.04, right=0.99, bottom=0.07, top=0.92, hspace=0.65, wspace=0.18)
    figure.savefig(path)
    plt.close(figure)


def write_report(report_dir: str | Path, report: dict, live: Stats, reference: Reference | None) -> dict:
    """Write report.json and report.png under ``report_dir``; return their paths."""
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(folder / REPORT_JSON), "png": str(folder / REPORT_PNG)}
    verdict = report["verdict"]
    window = report["window"]
    title = (f"production {report['version']}: {verdict['status']} -- {live.images} live images "
             f"({window['started_at']} to {window['until']}, {report['replicas']} replica(s))")
    plot(folder / REPORT_PNG, live, reference, verdict, title)
    Path(paths["json"]).write_text(json.dumps({**report, "files": paths}, indent=1) + "\n")
    return paths


def alarm_subject(version: str, verdict: Mapping) -> str:
    worst = sorted((entry for entry in verdict["checks"] if entry["drift"]), key=lambda e: -e["value"])
    shown = ", ".join(f"{entry['name']} {entry['value']:.2f}" for entry in worst[:3])
    return f"drift in production {version}: {shown}"


def alarm_text(report: Mapping, retraining: str) -> str:
    """The alarm email: what moved, what drift means, what to do. ``retraining`` says whether
    retraining was started and how."""
    verdict, window = report["verdict"], report["window"]
    lines = [
        f"Monitoring found drift in what production model {report['version']} receives or answers.",
        "",
        f"Window: {window['started_at']} to {window['until']}: {verdict['images']} images on "
        f"{report['replicas']} replica(s) of the API ({', '.join(report['urls'])}).",
        *[f"Not counted (did not answer): {item}." for item in report.get("unanswered", [])],
        "",
        "Statistics over their thresholds (live vs the training reference):",
    ]
    for entry in verdict["checks"]:
        if entry["drift"]:
            extra = (f" (live {entry['live']:.3f}, reference {entry['reference']:.3f})" if "live" in entry else "")
            lines.append(f"  {entry['name']}: {entry['value']:.3f} > {entry['threshold']}{extra} -- "
                         f"{_describe(entry['name'])}")
    lines += [
        "",
        "What this means: drift says the data changed -- another scanner or hospital, other patients, "
        "another body part, a client sending other files -- not that the model is wrong, and not that "
        "new labels exist. Retraining on the current dataset learns nothing new: what retraining needs "
        "is new LABELLED images like those arriving now.",
        "",
        "What to do:",
        "  1. Look at the attached plot (reference vs live). If the images are not chest radiographs "
        "(ood_share) or are broken (inverted, blank, wrong bit depth or size), fix the sending side: "
        "retraining will not help.",
        "  2. If they are genuine radiographs of a new population or device: have a sample of recent "
        "images labelled, add them to the dataset in its layout (<CLASS>/images/...) and upload it "
        "(`make data-push`): that starts the retraining pipeline (on GKE through the dataset trigger; "
        "locally run `make retrain-pipeline`).",
        "  3. Review the retrained candidate's report email and promote it with `make promote` if it "
        "is better on the new data.",
        "",
        f"Retraining: {retraining}",
        "",
        "This email is sent once per alarm: the next one comes after the drift has cleared and "
        "returned, or for another production version.",
        f"Report: {report.get('files', {}).get('json', '')} (plot: {report.get('files', {}).get('png', '')}).",
    ]
    return "\n".join(lines) + "\n"
