"""Serve the Pub/Sub push interceptor of the EventListener: ``python -m scripts.pubsub_auth`` (cluster/pubsub_auth.py)."""

from __future__ import annotations

import click

from cluster.pubsub_auth import GOOGLE_CERTS_URL, serve


@click.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on.")
@click.option("--audience", envvar="PUBSUB_AUDIENCE", required=True,
              help="The audience the subscription puts in its tokens (--push-auth-token-audience). [env PUBSUB_AUDIENCE]")
@click.option("--email", envvar="PUBSUB_PUSH_GSA", required=True,
              help="The push subscription's service account. [env PUBSUB_PUSH_GSA]")
@click.option("--also-accept", envvar="MONITOR_GSA", default="",
              help="Another account whose tokens may start retraining: the monitor's (make monitor on an "
                   "alarm). [env MONITOR_GSA]")
@click.option("--certs-url", default=GOOGLE_CERTS_URL, show_default=True,
              help="Where Google publishes the certificates of its token signing keys.")
def main(host, port, audience, email, also_accept, certs_url):
    """Serve the interceptor that lets only pushes signed by the subscription's account through.

    Example: python -m scripts.pubsub_auth --audience xray-mlops-dataset --email push@p.iam.gserviceaccount.com
    """
    serve(host, port, audience, email, certs_url, (also_accept,))


if __name__ == "__main__":
    main(prog_name="python -m scripts.pubsub_auth")
