"""The report email: outbox and SMTP delivery against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import email.policy
import io
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from helpers import clean_env, config_variables, free_port, run_module
from PIL import Image

from core.config import load_params
from notify.mail import DeliveryError, build_message, deliver, write_outbox
from notify.outcome import outcome_message
from registry.store import Registry
from scripts.notify import main

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SMTP_USER, SMTP_PASSWORD = "pipeline", "s3cret-pw"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """The developer's own SMTP or registry settings must not leak into a test."""
    for name in config_variables():
        monkeypatch.delenv(name, raising=False)


def png_bytes(color=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_metadata(classes=CLASSES, gate_passed=True) -> dict:
    per_class = {name: 0.95 for name in classes}
    return {
        "git_commit": "3f2a9c1d0b7e4a5f6c8d9e0f1a2b3c4d5e6f7a8b",
        "kind": "train",
        "parent_version": None,
        "classes": list(classes),
        "image_size": 128,
        "dataset": {
            "uri": "data/COVID-19_Radiography_Dataset",
            "manifest_sha256": "ab12" * 16,
            "class_counts": {name: 300 for name in classes},
            "split_counts": {"train": 840, "validation": 180, "test": 180},
        },
        "params": {"train": {"epochs": 25, "batch_size": 32}},
        "metrics": {
            "accuracy": 0.953,
            "precision": per_class, "recall": per_class, "f1": per_class,
            "support": {name: 45 for name in classes},
            "confusion": [[43, 1, 1, 0], [2, 41, 2, 0], [0, 2, 43, 0], [0, 0, 1, 44]],
        },
        "training": {"epochs_run": 14, "best_epoch": 11, "seconds": 182.4},
        "gate": {
            "passed": gate_passed,
            "checks": [
                {"name": "accuracy", "comparison": ">=", "threshold": 0.9, "value": 0.953, "passed": True},
                {"name": "covid_recall", "comparison": ">=", "threshold": 0.9, "value": 0.95, "passed": True},
                {"name": "onnx_parity", "comparison": "<=", "threshold": 0.0001, "value": 3e-07,
                 "passed": gate_passed},
            ],
        },
        "onnx": {"sha256": "9f" * 32, "opset": 17, "parity_max_abs_diff": 3e-07,
                 "input": "image", "output": "probabilities"},
        "libraries": {"python": "3.11.7", "tensorflow": "2.21.0", "onnxruntime": "1.32.0"},
        # training_curves.png is listed but not stored: the email must do without it.
        "reports": ["training_curves.png", "confusion_matrix.png"],
    }


PASSED_RUN = {"suite_sha256": "cc" * 32, "passed": 9, "failed": 0, "at": "2026-11-27T14:40:00Z",
              "api_accuracy": 0.953,
              "api_agreement": 1.0, "api_max_probability_diff": 1e-7, "api_images": 24}
FAILED_RUN = {"suite_sha256": "cc" * 32, "passed": 7, "failed": 2, "at": "2026-11-27T14:41:00Z"}


def register(registry_uri: Path, metadata: dict | None = None, run: dict | None = PASSED_RUN) -> str:
    registry = Registry(str(registry_uri))
    version = registry.register(
        {"model.onnx": b"onnx model bytes", "confusion_matrix.png": png_bytes()},
        metadata or sample_metadata(),
    )
    if run:
        registry.record_test_run(version, run)
    return version


@pytest.fixture
def registry_uri(tmp_path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def outbox(tmp_path) -> Path:
    return tmp_path / "outbox"


class KeepEnvelopes:
    """aiosmtpd handler that keeps every envelope it accepts."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"


def check_password(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(), SMTP_PASSWORD.encode())
    # handled=False: aiosmtpd then answers 535 itself; handled=True would leave the client waiting.
    return AuthResult(success=ok, handled=False)


def start_server(**smtp_options):
    handler = KeepEnvelopes()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **smtp_options)
    controller.start()
    return controller, handler


@pytest.fixture
def smtp_server():
    controller, handler = start_server()
    yield controller, handler
    controller.stop()


@pytest.fixture
def auth_smtp_server():
    controller, handler = start_server(
        authenticator=check_password, auth_required=True, auth_require_tls=False
    )
    yield controller, handler
    controller.stop()


def smtp_env(port: int, outbox: Path, **extra: str) -> dict:
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_STARTTLS": "false",
            "OUTBOX_DIR": str(outbox), **extra}


def run_cli(registry_uri: Path, env: dict, *args: str):
    return CliRunner().invoke(main, ["--registry", str(registry_uri), *args], env=env)


def read_eml(path: Path) -> email.message.EmailMessage:
    with open(path, "rb") as handle:
        return email.message_from_binary_file(handle, policy=email.policy.default)


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def test_outbox_delivery_writes_eml_with_text_html_and_inline_image(registry_uri, outbox):
    version = register(registry_uri)
    result = run_cli(registry_uri, {"OUTBOX_DIR": str(outbox)}, "--version", version,
                     "--to", "owner@example.org", "--from", "ci@example.org")
    assert result.exit_code == 0, result.output
    [eml] = list(outbox.glob("*.eml"))
    assert eml.name.endswith(f"-{version}.eml")
    message = read_eml(eml)
    assert message["Subject"] == (
        f"[xray-mlops] {version} ready to promote: accuracy 0.953, acceptance tests passed")
    assert (message["From"], message["To"]) == ("ci@example.org", "owner@example.org")
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert f"make promote VERSION={version}" in text
    assert f"make promote VERSION={version}" in html
    assert 'src="cid:confusion_matrix.png"' in html
    assert "training_curves.png" not in html  # listed in metadata, not stored in the version
    [image] = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert image["Content-ID"] == "<confusion_matrix.png>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == png_bytes()
    assert str(eml) in result.stdout
    assert f"make promote VERSION={version}" in result.stdout


def test_outbox_never_overwrites_an_email_of_the_same_second(registry_uri, outbox):
    version = register(registry_uri)
    registry = Registry(str(registry_uri))
    message = build_message(registry.metadata(version), registry, "ci@example.org", "owner@example.org")
    moment = datetime(2026, 11, 27, 14, 45, 0, tzinfo=UTC)
    first = write_outbox(message, outbox, now=moment)
    second = write_outbox(message, outbox, now=moment)
    assert first.name == f"20261127T144500Z-{version}.eml"
    assert second.name == f"20261127T144500Z-{version}-2.eml"
    assert first.read_bytes() == second.read_bytes()


def test_default_version_is_the_newest_testing_version(registry_uri, outbox):
    register(registry_uri, run=FAILED_RUN)
    newest = register(registry_uri)
    result = run_cli(registry_uri, {"OUTBOX_DIR": str(outbox)})
    assert result.exit_code == 0, result.output
    [eml] = list(outbox.glob("*.eml"))
    assert read_eml(eml)["X-Model-Version"] == newest


def test_smtp_delivery_reaches_the_server_with_envelope_and_subject(registry_uri, outbox, smtp_server):
    controller, handler = smtp_server
    version = register(registry_uri)
    result = run_cli(registry_uri, smtp_env(controller.port, outbox), "--version", version,
                     "--to", "owner@example.org", "--from", "ci@example.org")
    assert result.exit_code == 0, result.output
    [envelope] = handler.envelopes
    assert envelope.mail_from == "ci@example.org"
    assert envelope.rcpt_tos == ["owner@example.org"]
    received = parse(envelope.original_content)
    assert received["Subject"].startswith(f"[xray-mlops] {version} ready to promote")
    assert received.get_body(("html",)) is not None
    assert f"smtp://127.0.0.1:{controller.port} to owner@example.org" in result.stdout
    assert not outbox.exists()


def test_smtp_login_authenticates_against_the_server(registry_uri, outbox, auth_smtp_server):
    controller, handler = auth_smtp_server
    version = register(registry_uri)
    env = smtp_env(controller.port, outbox, SMTP_USER=SMTP_USER, SMTP_PASSWORD=SMTP_PASSWORD)
    result = run_cli(registry_uri, env, "--version", version)
    assert result.exit_code == 0, result.output
    [envelope] = handler.envelopes
    assert envelope.rcpt_tos == ["product-owner@example.com"]  # params.yaml default
    assert SMTP_PASSWORD not in result.stderr  # the logged configuration masks it
    assert '"password": "***"' in result.stderr


def test_wrong_smtp_password_exits_nonzero_and_saves_the_email(registry_uri, outbox, auth_smtp_server):
    controller, handler = auth_smtp_server
    version = register(registry_uri)
    env = smtp_env(controller.port, outbox, SMTP_USER=SMTP_USER, SMTP_PASSWORD="wrong")
    result = run_cli(registry_uri, env, "--version", version)
    assert result.exit_code == 1
    assert handler.envelopes == []
    [eml] = list(outbox.glob("*.eml"))
    [error_line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "SMTP delivery" in error_line and "login refused" in error_line and str(eml) in error_line
    assert "Traceback" not in result.output
    assert read_eml(eml)["X-Model-Version"] == version


def test_connection_refused_exits_nonzero_and_saves_the_email(registry_uri, outbox):
    version = register(registry_uri)
    closed_port = free_port()
    result = run_cli(registry_uri, smtp_env(closed_port, outbox), "--version", version)
    assert result.exit_code == 1
    [eml] = list(outbox.glob("*.eml"))
    assert f"127.0.0.1:{closed_port} failed (connection refused)" in result.stderr
    assert str(eml) in result.stderr
    assert f"make promote VERSION={version}" in result.stdout  # the summary still tells what to do


def test_silent_server_times_out_and_the_email_is_saved(registry_uri, outbox):
    version = register(registry_uri)
    registry = Registry(str(registry_uri))
    message = build_message(registry.metadata(version), registry, "ci@example.org", "owner@example.org")
    with socket.socket() as silent:  # accepts connections (backlog) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        params = load_params(environ=smtp_env(silent.getsockname()[1], outbox))
        params["smtp"]["timeout_s"] = 0.5
        with pytest.raises(DeliveryError, match="no answer within 0.5 s") as failure:
            deliver(message, params)
    assert failure.value.saved_to is not None and failure.value.saved_to.exists()


def test_starttls_not_offered_is_an_error_not_a_plain_text_send(registry_uri, outbox, smtp_server):
    controller, handler = smtp_server
    version = register(registry_uri)
    registry = Registry(str(registry_uri))
    message = build_message(registry.metadata(version), registry, "ci@example.org", "owner@example.org")
    params = load_params(environ=smtp_env(controller.port, outbox, SMTP_STARTTLS="true"))
    with pytest.raises(DeliveryError, match="STARTTLS"):
        deliver(message, params)
    assert handler.envelopes == []
    assert len(list(outbox.glob("*.eml"))) == 1


def test_failed_acceptance_tests_give_not_promotable_subject_and_no_command(registry_uri, outbox):
    version = register(registry_uri, run=FAILED_RUN)
    result = run_cli(registry_uri, {"OUTBOX_DIR": str(outbox)}, "--version", version)
    assert result.exit_code == 0, result.output
    message = read_eml(next(outbox.glob("*.eml")))
    assert message["Subject"] == f"[xray-mlops] {version} NOT promotable: acceptance tests failed"
    body = message.get_body(("plain",)).get_content() + message.get_body(("html",)).get_content()
    assert "make promote" not in body
    assert "2 failed, 7 passed" in body
    assert "make promote" not in result.stdout
    assert "cannot be promoted" in result.stdout


def test_the_production_model_is_reported_as_such_without_a_promote_command(registry_uri, outbox):
    version = register(registry_uri)
    Registry(str(registry_uri)).promote(version, by="owner@example.com")
    result = run_cli(registry_uri, {"OUTBOX_DIR": str(outbox)}, "--version", version)
    assert result.exit_code == 0, result.output
    message = read_eml(next(outbox.glob("*.eml")))
    assert message["Subject"] == f"[xray-mlops] {version} (production): acceptance tests passed"
    body = message.get_body(("plain",)).get_content() + message.get_body(("html",)).get_content()
    assert "make promote" not in body + result.stdout
    assert f"{version} is the production model; nothing to promote." in result.stdout


def test_untested_version_says_tests_not_run_yet(registry_uri, outbox):
    version = register(registry_uri, run=None)
    result = run_cli(registry_uri, {"OUTBOX_DIR": str(outbox)}, "--version", version)
    assert result.exit_code == 0, result.output
    message = read_eml(next(outbox.glob("*.eml")))
    assert message["Subject"] == f"[xray-mlops] {version} NOT promotable: acceptance tests not run yet"
    assert f"make unittest VERSION={version}" in message.get_body(("plain",)).get_content()


def test_hostile_class_name_is_escaped_in_the_email_html(registry_uri, outbox):
    hostile = ["COVID", "<script>alert(1)</script>", "Normal", "Viral Pneumonia"]
    version = register(registry_uri, sample_metadata(classes=hostile))
    run_cli(registry_uri, {"OUTBOX_DIR": str(outbox)}, "--version", version)
    html = read_eml(next(outbox.glob("*.eml"))).get_body(("html",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_bad_recipient_is_one_clear_line(registry_uri, outbox):
    register(registry_uri)
    result = run_cli(registry_uri, {"OUTBOX_DIR": str(outbox)}, "--to", "not-an-address")
    assert result.exit_code != 0
    assert "is not an email address" in result.stderr
    assert not outbox.exists()


def run_notify(*args: str, env_extra: dict) -> subprocess.CompletedProcess:
    return run_module("scripts.notify", *args, env=clean_env(**env_extra), timeout=60)


def test_empty_registry_is_one_clear_line_without_traceback(tmp_path, outbox):
    result = run_notify("--registry", str(tmp_path / "empty"), env_extra={"OUTBOX_DIR": str(outbox)})
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error_lines == [f"Error: the registry at {tmp_path / 'empty'} has no testing version: "
                           "run `make train` first"]
    assert "Traceback" not in result.stderr + result.stdout
    assert not outbox.exists()


def test_unknown_version_is_one_clear_line_without_traceback(registry_uri, outbox):
    register(registry_uri)
    result = run_notify("--registry", str(registry_uri), "--version", "v9999-20991231T000000Z",
                        env_extra={"OUTBOX_DIR": str(outbox)})
    assert result.returncode != 0
    [error_line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "v9999-20991231T000000Z" in error_line and "not in the registry" in error_line
    assert "Traceback" not in result.stderr + result.stdout


def test_help_describes_the_command_with_an_example():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--version", "--registry", "--to", "--from", "Example: python -m scripts.notify"):
        assert option in result.output


def test_an_outcome_email_shows_its_facts_in_both_parts():
    facts = {"base": "v0003-20261127T143000Z (production)", "base accuracy now": "0.9362 on 188 test images"}
    message = outcome_message("poor-model", "retraining produced a poor model", "ci@example.org",
                              "owner@example.org", metadata={"version": None}, facts=facts)
    assert message["Subject"] == "[xray-mlops] retraining produced a poor model"
    for part in ("plain", "html"):
        body = message.get_body((part,)).get_content()
        assert "v0003-20261127T143000Z (production)" in body and "0.9362 on 188 test images" in body, part
