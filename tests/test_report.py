"""The version report: its content, its verdict, HTML escaping, and the command line."""

from __future__ import annotations

import io
from html import escape
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner
from PIL import Image

from model.gate import failure_message
from notify.report import build_report, readiness, render_html, render_text
from registry.store import Registry
from scripts.report import main

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
VERSION = "v0001-20261127T143000Z"
PASSED_RUN = {"suite_sha256": "cc" * 32, "passed": 9, "failed": 0, "at": "2026-11-27T14:40:00Z",
              "api_accuracy": 0.953,
              "api_agreement": 1.0, "api_max_probability_diff": 1e-7, "api_images": 24}
FAILED_RUN = {"suite_sha256": "cc" * 32, "passed": 7, "failed": 2, "at": "2026-11-27T14:41:00Z"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("REGISTRY_URI", "PARAMS_FILE"):
        monkeypatch.delenv(name, raising=False)


def sample_metadata(classes=CLASSES, tests=(PASSED_RUN,), gate_passed=True) -> dict:
    return {
        "version": VERSION,
        "created_at": "2026-11-27T14:30:00Z",
        "git_commit": "3f2a9c1d0b7e4a5f6c8d9e0f1a2b3c4d5e6f7a8b",
        "kind": "retrain",
        "parent_version": "v0000-20261120T090000Z",
        "classes": list(classes),
        "dataset": {
            "uri": "data/COVID-19_Radiography_Dataset",
            "manifest_sha256": "ab12" * 16,
            "class_counts": {name: 300 + i for i, name in enumerate(classes)},
            "split_counts": {"test": 180, "train": 840, "validation": 180},
        },
        "metrics": {
            "accuracy": 0.953,
            "precision": {name: 0.91 for name in classes},
            "recall": {name: 0.92 for name in classes},
            "f1": {name: 0.915 for name in classes},
            "support": {name: 45 for name in classes},
            "confusion": [[43, 1, 1, 0], [2, 41, 2, 0], [0, 2, 43, 0], [0, 0, 1, 44]],
        },
        "training": {"epochs_run": 14, "best_epoch": 11, "seconds": 182.4},
        "gate": {
            "passed": gate_passed,
            "checks": [
                {"name": "accuracy", "comparison": ">=", "threshold": 0.9,
                 "value": 0.953 if gate_passed else 0.85, "passed": gate_passed},
                {"name": "onnx_parity", "comparison": "<=", "threshold": 0.0001, "value": 3e-07, "passed": True},
            ],
        },
        "onnx": {"sha256": "9f8e7d6c5b4a" + "0" * 52, "opset": 17, "parity_max_abs_diff": 3e-07},
        "tests": list(tests),
        "libraries": {"python": "3.11.7", "tensorflow": "2.21.0", "onnxruntime": "1.32.0"},
        "reports": ["confusion_matrix.png"],
    }


def test_text_report_holds_every_section_and_the_promote_command():
    text = render_text(sample_metadata())
    for expected in (
        VERSION, "retrain", "2026-11-27T14:30:00Z", "3f2a9c1d0b7e4a5f6c8d9e0f1a2b3c4d5e6f7a8b",
        "v0000-20261120T090000Z", "data/COVID-19_Radiography_Dataset", "ab12" * 16,
        "COVID 300, Lung_Opacity 301, Normal 302, Viral Pneumonia 303",
        "train 840, validation 180, test 180",  # split order, not metadata.json's sorted keys
        "0.953 on 180 test images", "onnx_parity", "3e-07", "0.0001", "9f8e7d6c5b4a",
        "9 passed, 0 failed, at 2026-11-27T14:40:00Z", "probabilities within 1e-07 of training's on 24 images",
        "tensorflow", "2.21.0",
        f"make promote VERSION={VERSION}",
    ):
        assert expected in text
    assert "9f8e7d6c5b4a0" not in text  # the ONNX hash is shortened


def test_per_class_and_confusion_tables_follow_the_class_order():
    text = render_text(sample_metadata())
    covid_row = next(line for line in text.splitlines() if line.strip().startswith("COVID "))
    assert covid_row.split()[1:] == ["0.910", "0.920", "0.915", "45"]
    header = next(line for line in text.splitlines() if "true \\ predicted" in line)
    assert header.split()[3:] == ["COVID", "Lung_Opacity", "Normal", "Viral", "Pneumonia"]
    viral_row = next(line for line in text.splitlines() if line.strip().startswith("Viral Pneumonia") and "44" in line)
    assert viral_row.split()[2:] == ["0", "0", "1", "44"]


def test_failed_tests_are_not_promotable_and_say_why():
    metadata = sample_metadata(tests=(PASSED_RUN, FAILED_RUN))
    ready = readiness(metadata)
    assert not ready.promotable
    assert ready.problems == ("acceptance tests failed",)
    assert "2 failed, 7 passed" in ready.next_step
    assert "make promote" not in render_text(metadata) + render_html(metadata)


def test_the_production_model_is_never_offered_for_promotion_again():
    passed, failed = sample_metadata(), sample_metadata(tests=(PASSED_RUN, FAILED_RUN))
    ready = readiness(passed, production=VERSION)
    assert ready.in_production and ready.promotable
    assert ready.next_step == f"{VERSION} is the production model; nothing to promote."
    text, html = render_text(passed, production=VERSION), render_html(passed, production=VERSION)
    assert "IN PRODUCTION" in text and "make promote" not in text + html
    broken = readiness(failed, production=VERSION)
    assert broken.in_production and not broken.promotable
    assert "2 failed, 7 passed" in broken.next_step and "`make rollback`" in broken.next_step
    assert "IN PRODUCTION, ACCEPTANCE TESTS FAILED" in render_text(failed, production=VERSION)
    # Another version in production changes nothing for this one.
    assert readiness(passed, production="v0009-20261128T000000Z").next_step == f"make promote VERSION={VERSION}"


def test_failed_gate_names_the_failing_check():
    ready = readiness(sample_metadata(gate_passed=False))
    assert ready.problems == ("quality gate failed",)
    assert "accuracy 0.85, required >= 0.9" in ready.next_step


def test_minimal_metadata_renders_and_says_not_tested_yet():
    metadata = {"version": VERSION}
    text, html = render_text(metadata), render_html(metadata)
    assert "not tested yet" in text and "not tested yet" in html
    assert f"make unittest VERSION={VERSION}" in text
    assert "none (trained from scratch)" in text


def test_html_escapes_every_hostile_value():
    hostile = '<script>alert("x")</script>'
    metadata = sample_metadata(classes=["COVID", hostile, "Normal", "Viral Pneumonia"])
    metadata["dataset"]["uri"] = hostile
    metadata["git_commit"] = hostile
    metadata["libraries"][hostile] = hostile
    metadata["gate"]["checks"][0]["name"] = hostile
    html = render_html(metadata, {"a\"onerror=\"x.png": "cid:a\"onerror=\"x.png"})
    assert "<script>" not in html
    assert 'onerror="' not in html
    assert html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 5


def test_html_is_self_contained_and_well_formed():
    html = render_html(sample_metadata(), {"confusion_matrix.png": "cid:confusion_matrix.png"})

    class Collector(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.sources = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.sources += [value for name, value in attrs if name in ("src", "href")]

    collector = Collector()
    collector.feed(html)
    assert collector.sources == ["cid:confusion_matrix.png"]
    assert not {"script", "link", "style", "iframe"} & set(collector.tags)
    assert html.count("<table") == html.count("</table>") >= 5
    assert f"make promote VERSION={VERSION}" in html


def test_html_without_images_has_no_img_tag():
    assert "<img" not in render_html(sample_metadata())


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def test_cli_writes_a_standalone_html_file_with_embedded_images(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    metadata = sample_metadata()
    del metadata["version"]
    version = registry.register({"model.onnx": b"onnx", "confusion_matrix.png": png_bytes()}, metadata)
    out = tmp_path / "reports" / "report.html"
    result = CliRunner().invoke(main, ["--registry", str(tmp_path / "registry"), "--format", "html",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert version in html and 'src="data:image/png;base64,' in html
    text = CliRunner().invoke(main, ["--registry", str(tmp_path / "registry"), "--version", version])
    assert text.exit_code == 0 and text.stdout.startswith(f"xray-mlops model report: {version}")


def test_cli_unknown_version_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["--registry", str(tmp_path / "empty"), "--version", VERSION])
    assert result.exit_code == 1
    expected = f"Error: version '{VERSION}' is not in the registry at {tmp_path / 'empty'}"
    assert result.stderr.splitlines()[-1] == expected


def test_text_and_html_show_the_same_sections_from_one_report():
    metadata = sample_metadata()
    titles = [section.title for section in build_report(metadata).sections]
    assert len(titles) >= 10
    text, html = render_text(metadata), render_html(metadata)
    for title in titles:
        assert f"\n{title}\n" in text
        assert f">{escape(title)}</h2>" in html


def test_a_gate_check_reads_the_same_in_the_report_and_the_refusal():
    metadata = sample_metadata(gate_passed=False)
    metadata["gate"]["checks"][0]["value"] = 0.8533333
    refusal = failure_message(metadata["gate"])
    assert refusal == "quality gate failed: accuracy = 0.853333, required >= 0.9"
    accuracy_row = next(line for line in render_text(metadata).splitlines() if line.strip().startswith("accuracy "))
    assert accuracy_row.split() == ["accuracy", ">=", "0.9", "0.853333", "NO"]
    assert "accuracy 0.853333, required >= 0.9" in readiness(metadata).next_step
