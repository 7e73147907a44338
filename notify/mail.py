"""Email the product owner the report of a registry version, by SMTP or into the local outbox.

    python -m scripts.notify --version v0001-20261127T143000Z --to owner@example.com

With ``smtp.host`` empty (SMTP_HOST unset) the email is written as an ``.eml`` file to
``outbox_dir``. With it set the email is sent by SMTP; if sending fails, a copy still lands in the
outbox, so a candidate is never left without its report, and the command exits non-zero.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from notify.report import (
    gate_verdict,
    render_html,
    render_text,
    report_images,
    tests_verdict,
)
from registry.policy import readiness
from registry.store import Registry

SUBJECT_PREFIX = "[xray-mlops]"
VERSION_HEADER = "X-Model-Version"
OUTCOME_HEADER = "X-Pipeline-Outcome"
# params.yaml has no smtp.timeout_s yet; a value there (or SMTP_TIMEOUT_S) is honoured once added.
DEFAULT_SMTP_TIMEOUT_S = 30.0


class DeliveryError(RuntimeError):
    """The email could not be delivered; ``saved_to`` is the outbox copy, when one was written."""

    def __init__(self, message: str, saved_to: Path | None = None):
        super().__init__(message)
        self.saved_to = saved_to


def what_happened(metadata: Mapping[str, Any]) -> str:
    """``retraining of production v0003 passed: `` for a retrained version; empty for training."""
    parent = metadata.get("parent") if isinstance(metadata.get("parent"), dict) else {}
    if metadata.get("kind") != "retrain":
        return ""
    base = "production" if parent.get("stage") == "production" else "the testing model"
    return f"retraining of {base} {metadata.get('parent_version') or ''}".rstrip() + " passed: "


def subject(metadata: Mapping[str, Any], tested_as: str | None = None, production: str | None = None) -> str:
    """``[xray-mlops] <version> ready to promote: ...`` or ``... NOT promotable: <why>``; retrained
    versions say from what; a model-test run (``tested_as``: its stage) says what the tests found;
    the production model (``production``: the version in production now) says so."""
    version = metadata.get("version", "?")
    ready = readiness(metadata, production)
    if tested_as:
        # tests_verdict starts with the verdict itself: "passed (14 passed, 0 failed, ...)".
        return f"{SUBJECT_PREFIX} acceptance tests of {version} ({tested_as}) {tests_verdict(metadata)}"
    if ready.in_production:
        return f"{SUBJECT_PREFIX} {version} (production): {', '.join(ready.problems) or 'acceptance tests passed'}"
    if ready.promotable:
        accuracy = (metadata.get("metrics") or {}).get("accuracy")
        shown = f"{accuracy:.3f}" if isinstance(accuracy, (int, float)) else "n/a"
        return (f"{SUBJECT_PREFIX} {what_happened(metadata)}{version} ready to promote: accuracy {shown}, "
                "acceptance tests passed")
    return f"{SUBJECT_PREFIX} {what_happened(metadata)}{version} NOT promotable: {', '.join(ready.problems)}"


def new_message(subject_line: str, sender: str, recipient: str) -> EmailMessage:
    """An empty email with this project's headers (subject, sender, recipient, date, message id)."""
    message = EmailMessage()
    message["Subject"] = subject_line
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="xray-mlops")
    return message


def content_id(name: str) -> str:
    """The Content-ID of a report image, without angle brackets: the ``cid:`` of its ``src``."""
    return "".join(char if char.isalnum() or char in "._-" else "_" for char in name)


def build_message(metadata: Mapping[str, Any], registry: Registry, sender: str, recipient: str,
                  tested_as: str | None = None, production: str | None = None,
                  stage: str | None = None) -> EmailMessage:
    """The report email: a text part, and an HTML alternative with the report PNGs inline.

    Layout: multipart/alternative(text/plain, multipart/related(text/html, image/png...)), so
    clients that show HTML find the images by Content-ID and the others read the text.
    ``production`` is the version in production now; ``stage`` where the version's files are.
    """
    version = str(metadata["version"])
    images = report_images(registry, version, metadata, stage)
    message = new_message(subject(metadata, tested_as, production), sender, recipient)
    message[VERSION_HEADER] = version
    # Quoted-printable keeps a saved .eml readable (and greppable) in a text editor.
    message.set_content(render_text(metadata, production=production), cte="quoted-printable")
    message.add_alternative(
        render_html(metadata, {name: f"cid:{content_id(name)}" for name in images}, production=production),
        subtype="html", cte="quoted-printable",
    )
    html_part = message.get_payload()[1]
    for name, png in images.items():
        html_part.add_related(
            png, maintype="image", subtype="png", cid=f"<{content_id(name)}>",
            filename=name, disposition="inline",
        )
    return message


def write_outbox(message: EmailMessage, outbox_dir: str | Path, now: datetime | None = None) -> Path:
    """Write ``message`` to ``<outbox_dir>/<UTC timestamp>-<version>.eml``; never overwrite a file.

    Two emails in the same second get ``-2``, ``-3``... suffixes (exclusive create, so two
    processes cannot pick the same name).
    """
    directory = Path(outbox_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    version = content_id(str(message.get(VERSION_HEADER) or message.get(OUTCOME_HEADER) or "message"))
    data = bytes(message)
    attempt = 1
    while True:
        path = directory / (f"{stamp}-{version}.eml" if attempt == 1 else f"{stamp}-{version}-{attempt}.eml")
        try:
            with open(path, "xb") as handle:
                handle.write(data)
            return path
        except FileExistsError:
            attempt += 1


def _server(smtp: Mapping[str, Any]) -> tuple[str, int, float]:
    """Host, port and timeout (seconds) of the SMTP server."""
    return (
        str(smtp["host"]),
        int(smtp.get("port") or smtplib.SMTP_PORT),
        float(smtp.get("timeout_s") or DEFAULT_SMTP_TIMEOUT_S),
    )


def _reason(exc: BaseException, smtp: Mapping[str, Any], timeout: float) -> str:
    """One line saying why SMTP failed, in words a person running the pipeline can act on."""
    if isinstance(exc, smtplib.SMTPResponseException):
        answer = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            text = f"login refused for user {smtp.get('user')!r}: {exc.smtp_code} {answer}"
        else:
            text = f"server answered {exc.smtp_code} {answer}"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        # smtplib reports a read timeout as SMTPServerDisconnected, the timeout as its context.
        text = f"no answer within {timeout:g} s"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def send_smtp(message: EmailMessage, smtp: Mapping[str, Any]) -> str:
    """Send ``message`` through the server in ``smtp`` (the ``smtp`` section of params).

    STARTTLS (with certificate checks) when ``starttls`` is true; a server that does not offer it
    is an error, never a silent fall back to plain text. Login when ``user`` is set.
    """
    host, port, timeout = _server(smtp)
    client = smtplib.SMTP(host, port, timeout=timeout)
    try:
        if smtp.get("starttls"):
            client.starttls(context=ssl.create_default_context())
        if smtp.get("user"):
            client.login(str(smtp["user"]), str(smtp.get("password") or ""))
        refused = client.send_message(message)
    except BaseException:
        # No QUIT here: a stalled server would keep us waiting another timeout for nothing.
        client.close()
        raise
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        # The server has accepted the message; a failed goodbye does not change that.
        client.close()
    where = f"smtp://{host}:{port} to {message['To']}"
    if refused:
        where += f" (refused: {', '.join(sorted(refused))})"
    return where


def deliver(message: EmailMessage, params: Mapping[str, Any]) -> str:
    """Deliver ``message`` as configured and return where it went (``.eml`` path or smtp://...).

    Raises DeliveryError when SMTP fails (after saving a copy to the outbox) or the outbox
    cannot be written.
    """
    # Set here, after every builder has encoded its bodies (quoted-printable lines stay at 76).
    # Header lines may be 998 long; at 78, Python moves a subject that just overflows onto a line
    # of its own, which its parser then reads back with a leading space.
    message.policy = message.policy.clone(max_line_length=998)
    smtp = params.get("smtp") or {}
    outbox_dir = params.get("outbox_dir") or "outbox"
    if not smtp.get("host"):
        try:
            return str(write_outbox(message, outbox_dir))
        except OSError as exc:
            raise DeliveryError(f"cannot write the email to the outbox {outbox_dir}: {exc}") from exc
    host, port, timeout = _server(smtp)
    try:
        return send_smtp(message, smtp)
    except (smtplib.SMTPException, OSError) as exc:
        failure = f"SMTP delivery to {host}:{port} failed ({_reason(exc, smtp, timeout)})"
        try:
            saved = write_outbox(message, outbox_dir)
        except OSError as save_exc:
            raise DeliveryError(f"{failure}, and the outbox copy could not be written: {save_exc}") from exc
        raise DeliveryError(f"{failure}; the email was saved to {saved}", saved_to=saved) from exc


def summary(metadata: Mapping[str, Any], email: str, production: str | None = None) -> str:
    """The block printed for the person running the pipeline (``production``: the version in
    production now)."""
    accuracy = (metadata.get("metrics") or {}).get("accuracy")
    rows = [
        ("version", str(metadata.get("version", "?"))),
        ("test accuracy", f"{accuracy:.3f}" if isinstance(accuracy, (int, float)) else "n/a"),
        ("quality gate", gate_verdict(metadata)),
        ("acceptance tests", tests_verdict(metadata)),
        ("email", email),
        ("next step", readiness(metadata, production).next_step),
    ]
    width = max(len(key) for key, _ in rows)
    return "\n".join(["notify summary"] + [f"  {key.ljust(width)}  {value}" for key, value in rows])
