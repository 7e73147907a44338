"""The report of a registry version, as plain text and as self-contained HTML.

``render_text`` and ``render_html`` are pure: they read a version's ``metadata.json`` (and, for
HTML, the ``src`` of each report image) and return a string. The email of ``notify.mail``
carries both; the command line prints or writes one::

    python -m scripts.report --version v0001-20261127T143000Z --format html --out report.html

Optional metadata keys may be missing (no test run yet, no parent, no report images): the report
says so instead of failing.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from registry.policy import failed_gate_checks, last_test_run, readiness, tests_passed
from registry.store import Registry, VersionNotFound

NOT_AVAILABLE = "n/a"
SHORT_HASH_CHARS = 12
SPLITS = ("train", "validation", "test")


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


def _threshold(value: Any) -> str:
    # Gate values span 0.9 (accuracy) to 1e-7 (ONNX parity): a fixed number of decimals hides one.
    return _number(value, ".4g")


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
        return "not recorded"
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
    return f"{verdict} ({detail})"


def _text_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the first column left-aligned, the others right."""
    table = [list(headers)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _key_values(pairs: Iterable[tuple[str, str]]) -> list[str]:
    pairs = list(pairs)
    width = max(len(key) for key, _ in pairs)
    return [f"  {key.ljust(width)}  {value}" for key, value in pairs]


def _overview(metadata: Mapping[str, Any], status: bool = True) -> list[tuple[str, str]]:
    metrics = _section(metadata, "metrics")
    test_images = _section(_section(metadata, "dataset"), "split_counts").get("test")
    accuracy = _number(metrics.get("accuracy"))
    if test_images is not None and metrics.get("accuracy") is not None:
        accuracy += f" on {test_images} test images"
    return [
        ("version", str(metadata.get("version", NOT_AVAILABLE))),
        ("kind", str(metadata.get("kind", NOT_AVAILABLE))),
        ("created at", str(metadata.get("created_at", NOT_AVAILABLE))),
        ("git commit", str(metadata.get("git_commit") or NOT_AVAILABLE)),
        ("test accuracy", accuracy),
        ("quality gate", gate_verdict(metadata)),
        *([("acceptance tests", tests_verdict(metadata))] if status else []),
    ]


def _lineage(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    dataset = _section(metadata, "dataset")
    parent, parent_record = metadata.get("parent_version"), _section(metadata, "parent")
    rows = [("parent version", (f"{parent} ({parent_record['stage']}), fine-tuned" if parent_record.get("stage")
                                else str(parent)) if parent else "none (trained from scratch)")]
    if parent_record.get("dataset_manifest_sha256"):
        rows.append(("parent's dataset", str(parent_record["dataset_manifest_sha256"])))
    return rows + [
        ("dataset", str(dataset.get("uri", NOT_AVAILABLE))),
        ("manifest sha256", str(dataset.get("manifest_sha256") or NOT_AVAILABLE)),
        ("class counts", _counts(dataset.get("class_counts"), _classes(metadata))),
        ("split counts", _counts(dataset.get("split_counts"), SPLITS)),
    ]


def _per_class_rows(metadata: Mapping[str, Any]) -> list[list[str]]:
    metrics = _section(metadata, "metrics")
    columns = [_section(metrics, key) for key in ("precision", "recall", "f1", "support")]
    return [[name] + [_number(column.get(name)) for column in columns] for name in _classes(metadata)]


def _confusion(metadata: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the confusion matrix; rows are true classes, columns predicted ones."""
    confusion = _section(metadata, "metrics").get("confusion")
    matrix = [row for row in confusion if isinstance(row, list)] if isinstance(confusion, list) else []
    if not matrix:
        return [], []
    classes = _classes(metadata)
    width = max(len(row) for row in matrix)

    def label(index: int) -> str:
        return classes[index] if index < len(classes) else str(index)

    header = ["true \\ predicted"] + [label(i) for i in range(width)]
    rows = [[label(i)] + [_number(cell) for cell in row] + [""] * (width - len(row)) for i, row in enumerate(matrix)]
    return header, rows


def _gate_rows(metadata: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the gate table; a production column when production was compared."""
    checks = _dicts(_section(metadata, "gate").get("checks"))
    compared = any("production_value" in check for check in checks)
    header = ["check", "comparison", "threshold", "value", *(["production"] if compared else []), "passed"]
    rows = [
        [
            str(check.get("name", "?")),
            str(check.get("comparison", "")),
            _threshold(check.get("threshold")),
            _threshold(check.get("value")),
            *([_threshold(check.get("production_value"))] if compared else []),
            "yes" if check.get("passed") is True else "NO",
        ]
        for check in checks
    ]
    return header, rows


def _delta(candidate: Any, production: Any) -> str:
    if not isinstance(candidate, (int, float)) or not isinstance(production, (int, float)):
        return NOT_AVAILABLE
    return f"{candidate - production:+.3f}"


def _comparison(metadata: Mapping[str, Any]) -> tuple[str, list[list[str]]]:
    """The candidate beside the production model, both measured on the same test images at training
    time: a sentence, and rows of (metric, candidate, production, delta)."""
    production = _section(_section(metadata, "gate"), "production")
    if not production:
        return "Nothing was in production when this version was trained.", []
    if production.get("comparable") is False:
        return f"Production {production.get('version')} could not be compared: {production.get('reason')}.", []
    mine, theirs = _section(metadata, "metrics"), _section(production, "metrics")
    rows = [["accuracy", _number(mine.get("accuracy")), _number(theirs.get("accuracy")),
             _delta(mine.get("accuracy"), theirs.get("accuracy"))]]
    for name in _classes(metadata):
        a, b = _section(mine, "recall").get(name), _section(theirs, "recall").get(name)
        rows.append([f"recall {name}", _number(a), _number(b), _delta(a, b)])
    sentence = (f"Production {production.get('version')}, evaluated at training time on the same "
                f"{production.get('test_images', '?')} test images.")
    return sentence, rows


COMPARISON_HEADER = ["metric", "this version", "production", "delta"]
STATUS_ELSEWHERE = ("Written at registration: its acceptance tests and whether it may be promoted change later. "
                    "See `python -m scripts.report --version {version}` or `python -m registry show {version}`.")


def _onnx(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    onnx = _section(metadata, "onnx")
    if not onnx:
        return []
    return [
        ("opset", _number(onnx.get("opset"))),
        ("sha256", _short_hash(onnx.get("sha256"))),
        ("parity (max abs diff vs Keras)", _threshold(onnx.get("parity_max_abs_diff"))),
        ("input / output", f"{onnx.get('input', NOT_AVAILABLE)} / {onnx.get('output', NOT_AVAILABLE)}"),
    ]


def _training(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    training = _section(metadata, "training")
    if not training:
        return []
    return [
        ("epochs run", _number(training.get("epochs_run"))),
        ("best epoch", _number(training.get("best_epoch"))),
        ("seconds", _number(training.get("seconds"), ".1f")),
    ]


def _libraries(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(name), str(version)) for name, version in _section(metadata, "libraries").items()]


def status_title(ready) -> str:
    """The one-line verdict at the top of a report."""
    if ready.in_production:
        return "IN PRODUCTION" if ready.promotable else "IN PRODUCTION, " + ", ".join(ready.problems).upper()
    return "READY TO PROMOTE" if ready.promotable else "NOT PROMOTABLE"


def render_text(metadata: Mapping[str, Any], status: bool = True, headline: str | None = None,
                production: str | None = None) -> str:
    """The report of one version (or of a candidate that was not registered) as plain text.

    ``status`` shows what changes after registration (acceptance tests, may it be promoted, the
    next step); a report stored at registration leaves it out rather than freeze it. ``headline``
    is an outcome sentence shown first (an email about a pipeline run). ``production`` is the
    version in production now (the next step differs for that one).
    """
    version = str(metadata.get("version", "?"))
    title = f"xray-mlops model report: {version}"
    lines = [title, "=" * len(title), ""]
    if headline:
        lines += [headline, ""]
    if status:
        ready = readiness(metadata, production)
        lines += [status_title(ready), ""]
        lines += ["Next step", f"  {ready.next_step}", ""]
    elif metadata.get("version"):
        lines += [STATUS_ELSEWHERE.format(version=version), ""]
    lines += ["Overview", *_key_values(_overview(metadata, status)), ""]
    sentence, comparison = _comparison(metadata)
    lines += ["Compared with production", f"  {sentence}"]
    lines += (_text_table(COMPARISON_HEADER, comparison) if comparison else []) + [""]
    lines += ["Lineage", *_key_values(_lineage(metadata)), ""]
    per_class = _per_class_rows(metadata)
    if per_class:
        lines += ["Per-class metrics (test split)"]
        lines += _text_table(["class", "precision", "recall", "f1", "support"], per_class) + [""]
    header, rows = _confusion(metadata)
    if rows:
        lines += ["Confusion matrix (rows: true class, columns: predicted class)"]
        lines += _text_table(header, rows) + [""]
    lines += [f"Quality gate: {gate_verdict(metadata)}"]
    gate_header, gate_rows = _gate_rows(metadata)
    if gate_rows:
        lines += _text_table(gate_header, gate_rows)
    lines += [""]
    onnx = _onnx(metadata)
    lines += ["ONNX", *(_key_values(onnx) if onnx else ["  not recorded"]), ""]
    if status:
        lines += [f"Acceptance tests: {tests_verdict(metadata)}", ""]
    training = _training(metadata)
    if training:
        lines += ["Training", *_key_values(training), ""]
    libraries = _libraries(metadata)
    lines += ["Libraries", *(_key_values(libraries) if libraries else ["  not recorded"]), ""]
    return "\n".join(lines)


# Inline style attributes rather than a <style> block: several email clients drop <head> styles.
BODY_STYLE = (
    "font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#1b1b1b;"
    "max-width:880px;margin:0 auto;padding:16px;line-height:1.4"
)
H1_STYLE = "font-size:22px;margin:0 0 12px 0"
H2_STYLE = "font-size:17px;margin:22px 0 6px 0;border-bottom:1px solid #ccc;padding-bottom:3px"
TABLE_STYLE = "border-collapse:collapse;font-size:14px;margin:4px 0 8px 0"
TH_STYLE = "text-align:left;padding:4px 10px;background:#f0f0f0;border-bottom:2px solid #999"
ROW_HEADER_STYLE = "text-align:left;padding:4px 10px;font-weight:600;border-bottom:1px solid #ddd"
TD_STYLE = "text-align:left;padding:4px 10px;border-bottom:1px solid #ddd"
TD_NUMBER_STYLE = "text-align:right;padding:4px 10px;border-bottom:1px solid #ddd;font-variant-numeric:tabular-nums"
DIAGONAL_STYLE = TD_NUMBER_STYLE + ";background:#e6f4ea;font-weight:600"
CODE_STYLE = (
    "font-family:SFMono-Regular,Consolas,Menlo,monospace;background:#f4f4f4;padding:8px 12px;"
    "display:block;border-radius:4px;font-size:14px"
)
READY_STYLE = "background:#e6f4ea;border-left:6px solid #1e8e3e;padding:10px 14px;font-size:16px;font-weight:600"
NOT_READY_STYLE = "background:#fce8e6;border-left:6px solid #d93025;padding:10px 14px;font-size:16px;font-weight:600"
IMAGE_STYLE = "max-width:100%;height:auto;border:1px solid #ddd;margin:4px 0 12px 0"


def _e(value: Any) -> str:
    """Every value shown in the HTML report goes through here."""
    return html.escape(str(value), quote=True)


def _html_table(headers: Sequence[str] | None, rows: Iterable[Sequence[str]], *, numeric_from: int = 1,
                diagonal: bool = False) -> str:
    """A table whose first column labels the row; columns from ``numeric_from`` align right."""
    parts = [f'<table style="{TABLE_STYLE}">']
    if headers:
        parts.append("<tr>" + "".join(f'<th style="{TH_STYLE}">{_e(cell)}</th>' for cell in headers) + "</tr>")
    for row_index, row in enumerate(rows):
        cells = [f'<th style="{ROW_HEADER_STYLE}">{_e(row[0])}</th>']
        for column, cell in enumerate(row[1:], start=1):
            if diagonal and column - 1 == row_index:
                style = DIAGONAL_STYLE
            else:
                style = TD_NUMBER_STYLE if column >= numeric_from else TD_STYLE
            cells.append(f'<td style="{style}">{_e(cell)}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _h2(title: str) -> str:
    return f'<h2 style="{H2_STYLE}">{_e(title)}</h2>'


def _html_key_values(pairs: Sequence[tuple[str, str]]) -> str:
    return _html_table(None, pairs, numeric_from=99) if pairs else "<p>not recorded</p>"


def render_html(metadata: Mapping[str, Any], images: Mapping[str, str] | None = None, status: bool = True,
                headline: str | None = None, production: str | None = None,
                facts: Mapping[str, Any] | None = None) -> str:
    """The report of one version as one self-contained HTML page (inline CSS, no external assets).

    ``images`` maps a report PNG file name to the ``src`` to show it with: ``cid:<name>`` in an
    email, the file name next to a stored report, or a ``data:`` URI. Every value is escaped.
    ``status``, ``headline`` and ``production`` as in :func:`render_text`; ``facts`` are key/value
    rows shown under the headline (an outcome email's).
    """
    version = str(metadata.get("version", "?"))
    body = [f'<h1 style="{H1_STYLE}">xray-mlops model report: {_e(version)}</h1>']
    if headline:
        body.append(f"<p><strong>{_e(headline)}</strong></p>")
    if facts:
        body.append(_html_key_values([(str(key), str(value)) for key, value in facts.items()]))
    if status:
        ready = readiness(metadata, production)
        if ready.in_production:
            style = READY_STYLE if ready.promotable else NOT_READY_STYLE
            body.append(f'<p style="{style}">{_e(status_title(ready).capitalize())}</p>')
            body.append(_h2("Next step"))
            body.append(f"<p>{_e(ready.next_step)}</p>")
        elif ready.promotable:
            body.append(f'<p style="{READY_STYLE}">Ready to promote</p>')
            body.append(_h2("Next step"))
            body.append("<p>Run this to promote it to production:</p>"
                        f'<code style="{CODE_STYLE}">{_e(ready.next_step)}</code>')
        else:
            body.append(f'<p style="{NOT_READY_STYLE}">Not promotable: {_e(", ".join(ready.problems))}</p>')
            body.append(_h2("Next step"))
            body.append(f"<p>{_e(ready.next_step)}</p>")
    elif metadata.get("version"):
        body.append(f"<p>{_e(STATUS_ELSEWHERE.format(version=version))}</p>")
    body += [_h2("Overview"), _html_key_values(_overview(metadata, status))]
    sentence, comparison = _comparison(metadata)
    body += [_h2("Compared with production"), f"<p>{_e(sentence)}</p>"]
    if comparison:
        body.append(_html_table(COMPARISON_HEADER, comparison))
    body += [_h2("Lineage"), _html_key_values(_lineage(metadata))]
    per_class = _per_class_rows(metadata)
    if per_class:
        body += [_h2("Per-class metrics (test split)"),
                 _html_table(["class", "precision", "recall", "F1", "support"], per_class)]
    header, rows = _confusion(metadata)
    if rows:
        body += [_h2("Confusion matrix"), "<p>Rows: true class; columns: predicted class.</p>",
                 _html_table(header, rows, diagonal=True)]
    body.append(_h2(f"Quality gate: {gate_verdict(metadata)}"))
    gate_header, gate_rows = _gate_rows(metadata)
    if gate_rows:
        body.append(_html_table(gate_header, gate_rows))
    body += [_h2("ONNX"), _html_key_values(_onnx(metadata))]
    if status:
        body += [_h2("Acceptance tests"), f"<p>{_e(tests_verdict(metadata))}</p>"]
    training = _training(metadata)
    if training:
        body += [_h2("Training"), _html_key_values(training)]
    body += [_h2("Libraries"), _html_key_values(_libraries(metadata))]
    if images:
        body.append(_h2("Figures"))
        for name, src in images.items():
            body.append(f'<p style="margin:8px 0 0 0">{_e(name)}</p>'
                        f'<img src="{_e(src)}" alt="{_e(name)}" style="{IMAGE_STYLE}">')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>xray-mlops report {_e(version)}</title></head>\n"
        f'<body style="{BODY_STYLE}">\n' + "\n".join(body) + "\n</body></html>\n"
    )


def resolve_version(registry: Registry, version: str | None) -> tuple[str, str]:
    """``(version, its stage)``: ``version`` itself, or the newest testing version when it is None."""
    if version:
        return version, registry.stage_of(version)  # VersionNotFound with the registry's own message
    versions = registry.versions("testing")
    if not versions:
        raise VersionNotFound(f"the registry at {registry.uri} has no testing version: run `make train` first")
    return versions[-1], "testing"


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
