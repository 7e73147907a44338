"""Email the product owner the report of a registry version: ``python -m scripts.notify``."""

from __future__ import annotations

from email.utils import getaddresses

import click

from core.cli import params_or_exit, registry_option
from core.config import describe
from notify.mail import DeliveryError, build_message, deliver, summary
from registry.store import Registry, RegistryError
from storage import StorageError


def _check_addresses(value: str, role: str, option: str, variable: str) -> None:
    """Refuse an empty or malformed address before any work, naming where it came from."""
    source = f"set {variable} or pass {option}"
    if not value.strip():
        raise click.ClickException(f"no {role} address: {source}")
    # A line break would let a value add email headers of its own.
    if "\n" in value or "\r" in value or any("@" not in address for _, address in getaddresses([value])):
        raise click.ClickException(f"{role} {value!r} is not an email address ({source})")


@click.command()
@click.option("--version", "version", help="Registry version to report (default: the newest in testing).")
@registry_option
@click.option("--to", "recipient", help="Recipient, e.g. the product owner (default: NOTIFY_TO, else params.yaml).")
@click.option("--from", "sender", help="Sender address (default: NOTIFY_FROM, else params.yaml).")
@click.option("--tested-as", type=click.Choice(["production", "testing"]),
              help="The email reports a model-test run of VERSION as this stage's model.")
def main(version: str | None, registry_uri: str | None, recipient: str | None, sender: str | None,
         tested_as: str | None) -> None:
    """Email the product owner the report of VERSION, with the promote command when it is ready.

    Sends by SMTP when SMTP_HOST is set, else writes an .eml file to OUTBOX_DIR. If SMTP fails,
    the email is saved to the outbox and the command exits non-zero.

    \b
    Example: python -m scripts.notify --version v0001-20261127T143000Z --to owner@example.com
    """
    params = params_or_exit({"registry_uri": registry_uri, "notify.to": recipient, "notify.from": sender})
    click.echo(describe(params, "notify", ("registry_uri", "outbox_dir", "smtp", "notify")), err=True)
    recipient, sender = params["notify"]["to"], params["notify"]["from"]
    _check_addresses(recipient, "recipient", "--to", "NOTIFY_TO")
    _check_addresses(sender, "sender", "--from", "NOTIFY_FROM")
    try:
        registry = Registry(params["registry_uri"])
        version, stage = registry.resolve_version(version)
        metadata = registry.metadata(version, stage)
        production = registry.production_version()
        message = build_message(metadata, registry, sender, recipient, tested_as, production, stage)
    except (RegistryError, StorageError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        delivered_to = deliver(message, params)
    except DeliveryError as exc:
        email = f"NOT sent; copy saved to {exc.saved_to}" if exc.saved_to else "NOT sent, not saved"
        click.echo(summary(metadata, email, production))
        raise click.ClickException(str(exc)) from exc
    click.echo(summary(metadata, delivered_to, production))


if __name__ == "__main__":
    main(prog_name="python -m scripts.notify")
