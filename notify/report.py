"""The report of a registry version, as plain text and as self-contained HTML.

:func:`build_report` reads a version's ``metadata.json`` once into a :class:`Report` (its sections,
in order); :func:`render_text` lays that out as text and :func:`render_html` through the Jinja2
template ``notify/templates/report.html``, so both formats always hold the same sections. The email
of ``notify.mail`` carries both; the command line prints or writes one::

    python -m scripts.report --version v0001-20261127T143000Z --format html --out report.html

Optional metadata keys may be missing (no test run yet, no parent, no report images): the report
says so instead of failing.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from registry.policy import check_cells, failed_gate_checks, gate_number, last_test_run, readiness, tests_passed
from registry.store import Registry

__all__ = ["build_report", "gate_verdict", "readiness", "render_html", "render_text", "tests_verdict"]

NOT_AVAILABLE = "n/a"
NOT_RECORDED = "not recorded"
SHORT_HASH_CHARS = 12
SPLITS = ("train", "validation", "test")
STATUS_ELSEWHERE = ("Written at registration: its acceptance tests and whether it may be promoted change later. "
                    "See `python -m scripts.report --version {version}` or `python -m registry show {version}`.")


def _escape(value: Any) -> markupsafe.Markup:
    """Every value shown in the HTML report goes through here (``&quot;``, as html.escape writes it)."""
    return value if isinstance(value, markupsafe.Markup) else markupsafe.Markup(html.escape(str(value), quote=True))


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    finalize=_escape,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Table:
    """Rows whose first cell labels the row. Without ``header`` it is key/value pairs (values read
    as text); with one, the other columns are figures. ``diagonal`` marks a confusion matrix."""

    header: Sequence[str] | None
    rows: Sequence[Sequence[str]]
    diagonal: bool = False


@dataclass(frozen=True)
class Section:
    """One titled part of the report: paragraphs, then a command to run, a table, figures."""

    title: str
    paragraphs: Sequence[str] = ()
    command: str | None = None
    table: Table | None = None
    figures: Sequence[tuple[str, str]] = ()  # (file name, the src to show it with)


@dataclass(frozen=True)
class Banner:
    """The verdict at the top: may the version be promoted (``good``), in a short phrase."""

    text: str
    good: bool


@dataclass(frozen=True)
class Report:
    version: str
    headline: str | None = None
    facts: Table | None = None
    banner: Banner | None = None
    note: str | None = None
    sections: list[Section] = field(default_factory=list)


def _dicts(items: Any) -> list[dict]:
    """The dict entries of a metadata list; anything else in it is ignored, not fatal."""
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _section(metadata: Mapping[str, Any], key: str) -> dict:
    value = metadata.get(key)
    return value if isinstance(value, dict) else {}


def _number(value: Any, spec: str = ".3f") -> str:
    """A metric for people: floats with ``spec``, ints as they are, missing as n/a."""
    if value is None:
        return NOT_AVAILABLE
    return format(value, spec) if isinstance(value, float) else str(value)


def _short_hash(value: Any) -> str:
    return str(value)[:SHORT_HASH_CHARS] if value else NOT_AVAILABLE


def _counts(counts: Any, order: Sequence[str] = ()) -> str:
    """``COVID 300, Normal 280``: names in ``order`` first (metadata.json stores keys sorted)."""
    if not isinstance(counts, dict) or not counts:
        return NOT_AVAILABLE
    names = [name for name in order if name in counts] + [name for name in counts if name not in order]
    return ", ".join(f"{name} {counts[name]}" for name in names)


def _classes(metadata: Mapping[str, Any]) -> list[str]:
    classes = metadata.get("classes")
    if isinstance(classes, list) and classes:
        return [str(name) for name in classes]
    precision = _section(metadata, "metrics").get("precision")
    return [str(name) for name in precision] if isinstance(precision, dict) else []


def gate_verdict(metadata: Mapping[str, Any]) -> str:
    """``passed``, ``FAILED (check, ...)`` or ``not recorded``."""
    gate = _section(metadata, "gate")
    if "passed" not in gate:
        return NOT_RECORDED
    if gate["passed"] is True:
        return "passed"
    failed = [str(check.get("name", "?")) for check in failed_gate_checks(metadata)]
    return "FAILED" + (f" ({', '.join(failed)})" if failed else "")


def tests_verdict(metadata: Mapping[str, Any]) -> str:
    """The newest acceptance-test run in one phrase, or ``not tested yet``."""
    run = last_test_run(dict(metadata))
    if run is None:
        return "not tested yet"
    verdict = "passed" if tests_passed(dict(metadata)) else "FAILED"
    detail = f"{run.get('passed', '?')} passed, {run.get('failed', '?')} failed"
    if run.get("at"):
        detail += f", at {run['at']}"
    if run.get("api_accuracy") is not None:
        detail += f", accuracy through the API {_number(run['api_accuracy'])}"
    if isinstance(run.get("api_max_probability_diff"), (int, float)):
        detail += (f", probabilities within {run['api_max_probability_diff']:.2g} of training's on "
                   f"{run.get('api_images', '?')} images")
    return f"{verdict} ({detail})"


def _pairs(title: str, pairs: Sequence[tuple[str, str]]) -> Section:
    """A key/value section, or ``not recorded`` when there is nothing to show."""
    return Section(title, table=Table(None, pairs)) if pairs else Section(title, paragraphs=[NOT_RECORDED])


def _status(metadata: Mapping[str, Any], production: str | None) -> tuple[Banner, Section]:
    """What changes after registration: may it be promoted, and the next step."""
    ready = readiness(metadata, production)
    if ready.in_production:
        banner = Banner("In production" + "".join(f", {problem}" for problem in ready.problems), ready.promotable)
    elif ready.promotable:
        banner = Banner("Ready to promote", True)
        return banner, Section("Next step", ["Run this to promote it to production:"], command=ready.next_step)
    else:
        banner = Banner(f"Not promotable: {', '.join(ready.problems)}", False)
    return banner, Section("Next step", [ready.next_step])


def _overview(metadata: Mapping[str, Any], status: bool) -> Section:
    metrics = _section(metadata, "metrics")
    test_images = _section(_section(metadata, "dataset"), "split_counts").get("test")
    accuracy = _number(metrics.get("accuracy"))
    if test_images is not None and metrics.get("accuracy") is not None:
        accuracy += f" on {test_images} test images"
    return _pairs("Overview", [
        ("version", str(metadata.get("version", NOT_AVAILABLE))),
        ("kind", str(metadata.get("kind", NOT_AVAILABLE))),
        ("created at", str(metadata.get("created_at", NOT_AVAILABLE))),
        ("git commit", str(metadata.get("git_commit") or NOT_AVAILABLE)),
        ("test accuracy", accuracy),
        ("quality gate", gate_verdict(metadata)),
        *([("acceptance tests", tests_verdict(metadata))] if status else []),
    ])


def _delta(candidate: Any, production: Any) -> str:
    if not isinstance(candidate, (int, float)) or not isinstance(production, (int, float)):
        return NOT_AVAILABLE
    return f"{candidate - production:+.3f}"


def _comparison(metadata: Mapping[str, Any]) -> Section:
    """The candidate beside the production model, both measured on the same test images at training time."""
    title = "Compared with production"
    production = _section(_section(metadata, "gate"), "production")
    if not production:
        return Section(title, ["Nothing was in production when this version was trained."])
    if production.get("comparable") is False:
        return Section(title, [f"Production {production.get('version')} could not be compared: "
                               f"{production.get('reason')}."])
    mine, theirs = _section(metadata, "metrics"), _section(production, "metrics")
    rows = [["accuracy", _number(mine.get("accuracy")), _number(theirs.get("accuracy")),
             _delta(mine.get("accuracy"), theirs.get("accuracy"))]]
    for name in _classes(metadata):
        a, b = _section(mine, "recall").get(name), _section(theirs, "recall").get(name)
        rows.append([f"recall {name}", _number(a), _number(b), _delta(a, b)])
    sentence = (f"Production {production.get('version')}, evaluated at training time on the same "
                f"{production.get('test_images', '?')} test images.")
    return Section(title, [sentence], table=Table(["metric", "this version", "production", "delta"], rows))


def _lineage(metadata: Mapping[str, Any]) -> Section:
    dataset = _section(metadata, "dataset")
    parent, parent_record = metadata.get("parent_version"), _section(metadata, "parent")
    rows = [("parent version", (f"{parent} ({parent_record['stage']}), fine-tuned" if parent_record.get("stage")
                                else str(parent)) if parent else "none (trained from scratch)")]
    if parent_record.get("dataset_manifest_sha256"):
        rows.append(("parent's dataset", str(parent_record["dataset_manifest_sha256"])))
    return _pairs("Lineage", rows + [
        ("dataset", str(dataset.get("uri", NOT_AVAILABLE))),
        ("manifest sha256", str(dataset.get("manifest_sha256") or NOT_AVAILABLE)),
        ("class counts", _counts(dataset.get("class_counts"), _classes(metadata))),
        ("split counts", _counts(dataset.get("split_counts"), SPLITS)),
        *([("near-duplicates", near_duplicates(dataset["groups"]))] if _section(dataset, "groups") else []),
    ])


def near_duplicates(groups: Mapping[str, Any]) -> str:
    """The dataset's near-duplicate groups in one phrase (model/groups.py)."""
    return (f"{_number(groups.get('groups'))} groups of {_number(groups.get('images_in_groups'))} images "
            f"(the largest {_number(groups.get('largest_group'))}), {_number(groups.get('moved_images'))} "
            f"moved to their group's split, {_number(groups.get('conflicts'))} label conflicts "
            f"({_number(groups.get('images_in_conflicts'))} images)")


def _per_class(metadata: Mapping[str, Any]) -> Section | None:
    metrics = _section(metadata, "metrics")
    columns = [_section(metrics, key) for key in ("precision", "recall", "f1", "support")]
    rows = [[name] + [_number(column.get(name)) for column in columns] for name in _classes(metadata)]
    if not rows:
        return None
    return Section("Per-class metrics (test split)", table=Table(["class", "precision", "recall", "F1", "support"], rows))


def _confusion(metadata: Mapping[str, Any]) -> Section | None:
    """The confusion matrix; rows are true classes, columns predicted ones."""
    confusion = _section(metadata, "metrics").get("confusion")
    matrix = [row for row in confusion if isinstance(row, list)] if isinstance(confusion, list) else []
    if not matrix:
        return None
    classes = _classes(metadata)
    width = max(len(row) for row in matrix)

    def label(index: int) -> str:
        return classes[index] if index < len(classes) else str(index)

    header = ["true \\ predicted"] + [label(i) for i in range(width)]
    rows = [[label(i)] + [_number(cell) for cell in row] + [""] * (width - len(row)) for i, row in enumerate(matrix)]
    return Section("Confusion matrix", ["Rows: true class; columns: predicted class."],
                   table=Table(header, rows, diagonal=True))


def _gate(metadata: Mapping[str, Any]) -> Section:
    """The gate table; a production column when production was compared."""
    checks = _dicts(_section(metadata, "gate").get("checks"))
    compared = any("production_value" in check for check in checks)
    columns = ["name", "comparison", "threshold", "value", *(["production"] if compared else []), "passed"]
    header = ["check", *columns[1:]]
    rows = [[check_cells(check)[column] for column in columns] for check in checks]
    return Section(f"Quality gate: {gate_verdict(metadata)}", table=Table(header, rows) if rows else None)


def _onnx(metadata: Mapping[str, Any]) -> Section:
    onnx = _section(metadata, "onnx")
    return _pairs("ONNX", [
        ("opset", _number(onnx.get("opset"))),
        ("sha256", _short_hash(onnx.get("sha256"))),
        ("parity (max abs diff vs Keras)", gate_number(onnx.get("parity_max_abs_diff"))),
        ("input / output", f"{onnx.get('input', NOT_AVAILABLE)} / {onnx.get('output', NOT_AVAILABLE)}"),
    ] if onnx else [])


def _training(metadata: Mapping[str, Any]) -> Section | None:
    training = _section(metadata, "training")
    if not training:
        return None
    return _pairs("Training", [
        ("epochs run", _number(training.get("epochs_run"))),
        ("best epoch", _number(training.get("best_epoch"))),
        ("seconds", _number(training.get("seconds"), ".1f")),
    ])


def build_report(metadata: Mapping[str, Any], images: Mapping[str, str] | None = None, status: bool = True,
                 headline: str | None = None, production: str | None = None,
                 facts: Mapping[str, Any] | None = None) -> Report:
    """The report of one version (or of a candidate that was not registered), as data.

    ``status`` shows what changes after registration (acceptance tests, may it be promoted, the
    next step); a report stored at registration leaves it out rather than freeze it. ``headline``
    is an outcome sentence shown first (an email about a pipeline run), ``facts`` key/value rows
    under it. ``production`` is the version in production now (the next step differs for that
    one). ``images`` maps a report PNG file name to the ``src`` to show it with.
    """
    version = str(metadata.get("version", "?"))
    banner, note, sections = None, None, []
    if status:
        banner, next_step = _status(metadata, production)
        sections.append(next_step)
    elif metadata.get("version"):
        note = STATUS_ELSEWHERE.format(version=version)
    sections += [_overview(metadata, status), _comparison(metadata), _lineage(metadata),
                 _per_class(metadata), _confusion(metadata), _gate(metadata), _onnx(metadata)]
    if status:
        sections.append(Section(f"Acceptance tests: {tests_verdict(metadata)}"))
    libraries = [(str(name), str(value)) for name, value in _section(metadata, "libraries").items()]
    sections += [_training(metadata), _pairs("Libraries", libraries)]
    if images:
        sections.append(Section("Figures", figures=list(images.items())))
    facts_table = Table(None, [(str(key), str(value)) for key, value in facts.items()]) if facts else None
    return Report(version, headline, facts_table, banner, note, [section for section in sections if section])


def _text_table(table: Table) -> list[str]:
    """Columns padded to their widest cell; figures (columns after the first, under a header) right-aligned."""
    cells = ([list(table.header)] if table.header else []) + [list(row) for row in table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for row in cells:
        padded = [row[0].ljust(widths[0])] + [cell.rjust(width) if table.header else cell.ljust(width)
                                              for cell, width in zip(row[1:], widths[1:])]
        lines.append("  " + "  ".join(padded).rstrip())
    return lines


def render_text(metadata: Mapping[str, Any], status: bool = True, headline: str | None = None,
                production: str | None = None) -> str:
    """The report of one version as plain text (arguments as in :func:`build_report`)."""
    report = build_report(metadata, status=status, headline=headline, production=production)
    title = f"xray-mlops model report: {report.version}"
    lines = [title, "=" * len(title), ""]
    for lead in (report.headline, report.banner and report.banner.text.upper(), report.note):
        if lead:
            lines += [lead, ""]
    for section in report.sections:
        lines += [section.title, *(f"  {line}" for line in [*section.paragraphs, section.command] if line)]
        lines += [*(_text_table(section.table) if section.table else []), ""]
    return "\n".join(lines)


def render_html(metadata: Mapping[str, Any], images: Mapping[str, str] | None = None, status: bool = True,
                headline: str | None = None, production: str | None = None,
                facts: Mapping[str, Any] | None = None) -> str:
    """The report of one version as one self-contained HTML page (inline CSS, no external assets).

    ``images`` map to ``cid:<name>`` in an email, the file name next to a stored report, or a
    ``data:`` URI; the other arguments as in :func:`build_report`. Every value is escaped.
    """
    report = build_report(metadata, images, status, headline, production, facts)
    return TEMPLATES.get_template("report.html").render(report=report)


def report_image_names(metadata: Mapping[str, Any], files: Iterable[str]) -> list[str]:
    """The report PNGs of a version that really exist, in the order the metadata lists them.

    Without a ``reports`` key every PNG of the version counts, so older versions still show theirs.
    """
    present = set(files)
    listed = metadata.get("reports")
    names = [str(name) for name in listed] if isinstance(listed, list) else sorted(present)
    return [name for name in names if name in present and name.lower().endswith(".png")]


def report_images(registry: Registry, version: str, metadata: Mapping[str, Any],
                  stage: str | None = None) -> dict[str, bytes]:
    """File name -> PNG bytes of the report images stored in ``version`` (in ``stage``: looked up
    once when None)."""
    stage = stage or registry.stage_of(version)
    names = report_image_names(metadata, registry.files(version, stage))
    return {name: registry.read_file(version, name, stage) for name in names}


def data_uri(png: bytes) -> str:
    """A ``data:`` URI, so an HTML file written alone still shows its images."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
