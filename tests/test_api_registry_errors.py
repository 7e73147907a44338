"""The API and a registry it cannot read: a Google credentials failure (a Workload Identity token
that cannot be had) is reported in /readyz and the up-to-date gauge, logged once on one line, and at
start-up is one line, not a traceback. Real google-cloud-storage and google-auth clients, a real
token endpoint on loopback that refuses, fake-gcs-server, the real app under waitress."""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from api_helpers import RunningApi, image_bytes, promote_model, wait_for
from conftest import new_bucket
from helpers import REPO_ROOT, clean_env

from api.app import create_app
from api.serve import start_in_thread
from registry.store import Registry
from storage.gcs import GCSStorage


class RefusingTokenEndpoint(http.server.BaseHTTPRequestHandler):
    """An OAuth token endpoint that refuses every refresh, as a revoked grant does."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def token_endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RefusingTokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


def failing_storage(uri: str, token_uri: str) -> GCSStorage:
    """The registry's backend with credentials whose token refresh is refused."""
    from google.cloud import storage
    from google.oauth2.credentials import Credentials

    credentials = Credentials(token=None, refresh_token="revoked", token_uri=token_uri, client_id="c",
                              client_secret="s")
    client = storage.Client(project="test", credentials=credentials,
                            client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]})
    return GCSStorage(uri, client=client)


def test_a_credentials_failure_while_polling_is_reported_in_readyz_and_the_gauge_once(fake_gcs, token_endpoint,
                                                                                       caplog):
    uri = f"gs://{new_bucket()}/registry"
    production = promote_model(Registry(uri))
    app = create_app({"REGISTRY_URI": uri, "RELOAD_INTERVAL_S": 0.1, "INTRA_OP_THREADS": 1})
    api = RunningApi(app, start_in_thread(app, threads=2))
    try:
        assert api.metric("xray_api_model_up_to_date") == 1
        healthy = api.holder.registry
        with caplog.at_level(logging.WARNING, logger="api.model_holder"):
            api.holder.registry = Registry(uri, storage=failing_storage(uri, token_endpoint))
            wait_for(lambda: api.get("/readyz").json()["wanted_error"], message="the credentials failure")
            time.sleep(0.5)  # several polls while it lasts
        ready = api.get("/readyz").json()
        assert "credentials failed" in ready["wanted_error"] and "invalid_grant" in ready["wanted_error"]
        assert ready["model_version"] == production  # the served model keeps serving
        assert api.metric("xray_api_model_up_to_date") == 0
        assert api.predict_png(image_bytes()).status_code == 200
        logged = [r for r in caplog.records if r.name == "api.model_holder"]
        assert len(logged) == 1 and logged[0].exc_info is None and "\n" not in logged[0].getMessage()
        api.holder.registry = healthy
        wait_for(lambda: api.metric("xray_api_model_up_to_date") == 1, message="the recovery")
        assert api.get("/readyz").json()["wanted_error"] is None
    finally:
        api.close()


def test_a_credentials_failure_at_start_up_is_one_line_and_readyz_says_it(tmp_path, token_endpoint):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    credentials = tmp_path / "service-account.json"  # a service account whose token is refused
    credentials.write_text(json.dumps({"type": "service_account", "project_id": "test", "private_key_id": "1",
                                       "private_key": key.decode(), "client_email": "api@test.iam.gserviceaccount.com",
                                       "client_id": "1", "token_uri": token_endpoint}))
    env = {k: v for k, v in clean_env(REGISTRY_URI="gs://bucket/registry",
                                      GOOGLE_APPLICATION_CREDENTIALS=str(credentials)).items()
           if k != "STORAGE_EMULATOR_HOST"}
    port_file = tmp_path / "port"
    process = subprocess.Popen([sys.executable, "-m", "api.serve", "--port", "0", "--port-file", str(port_file)],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
        answer = requests.get(f"http://127.0.0.1:{port_file.read_text().strip()}/readyz", timeout=10)
        assert answer.status_code == 503
        assert "credentials failed" in answer.json()["error"]["message"]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "Traceback" not in err
    failures = [line for line in err.splitlines() if "credentials failed" in line]
    assert len(failures) == 1, err


def test_any_error_reading_the_pointer_is_reported_not_raised(tmp_path):
    from api.model_holder import ModelHolder

    registry = Registry(str(tmp_path / "registry"))
    production = promote_model(registry)
    holder = ModelHolder(registry, reload_interval_s=0, intra_op_threads=1)
    holder.start()
    registry.storage.write("production/current.json", b'["written by hand"]')  # .get() on a list fails
    assert holder.refresh() is False
    assert holder.predictor.version == production
    assert "cannot read the production pointer" in holder.wanted[1]


def test_a_credentials_failure_is_a_storage_error_naming_it(fake_gcs, token_endpoint):
    from storage import StorageError

    uri = f"gs://{new_bucket()}/registry"
    with pytest.raises(StorageError, match="cannot read .*current.json: the Google Cloud credentials failed "
                                           r"\(RefreshError: .*invalid_grant"):
        failing_storage(uri, token_endpoint).read("production/current.json")
