"""The Pub/Sub push interceptor (cluster/pubsub_auth.py), served for real, with real signed tokens.

Google's signing keys are replaced by a key made here, whose certificate a loopback server
publishes the way https://www.googleapis.com/oauth2/v1/certs does; everything else (signature,
audience, expiry, issuer, account) is checked by the code that runs on the cluster.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from helpers import REPO_ROOT, clean_env, free_port

AUDIENCE = "xray-mlops-dataset"
PUSH_ACCOUNT = "xray-pubsub-push@my-xray-project.iam.gserviceaccount.com"
MONITOR_ACCOUNT = "xray-pipeline@my-xray-project.iam.gserviceaccount.com"


def key_and_certificate():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test signer")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def signer():
    """A signing key whose certificate a loopback server publishes under key id ``k1``."""
    key_pem, certificate = key_and_certificate()
    body = json.dumps({"k1": certificate}).encode()

    class Certs(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield crypt.RSASigner.from_string(key_pem, "k1"), f"http://127.0.0.1:{server.server_address[1]}/certs"
    server.shutdown()


def start_interceptor(certs_url: str):
    """``python -m scripts.pubsub_auth`` on a loopback port; returns its URL and process."""
    port = free_port()
    env = clean_env(PUBSUB_AUDIENCE=AUDIENCE, PUBSUB_PUSH_GSA=PUSH_ACCOUNT, MONITOR_GSA=MONITOR_ACCOUNT)
    process = subprocess.Popen([sys.executable, "-m", "scripts.pubsub_auth", "--host", "127.0.0.1", "--port", str(port),
                                "--certs-url", certs_url], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/live", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    return url, process


@pytest.fixture(scope="module")
def interceptor(signer):
    url, process = start_interceptor(signer[1])
    yield url, process
    process.terminate()
    process.wait(timeout=10)


def token(signer, **changes) -> str:
    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": PUSH_ACCOUNT, "email_verified": True,
              "sub": "1234", "iat": now, "exp": now + 3600, **changes}
    return jwt.encode(signer, claims).decode()


def intercept(url: str, header: dict) -> dict:
    """An InterceptorRequest as the EventListener sends it, and the response."""
    request = {"body": json.dumps({"message": {"attributes": {}}}), "header": header,
               "context": {"event_url": "/", "event_id": "e1", "trigger_id": "namespaces/x/triggers/dataset-retraining"}}
    with urllib.request.urlopen(urllib.request.Request(url, data=json.dumps(request).encode(), method="POST"),
                                timeout=10) as answer:
        assert answer.status == 200  # Triggers reads a refusal from the body; any other status is an error
        return json.loads(answer.read())


def test_a_push_signed_for_the_subscription_continues(interceptor, signer):
    response = intercept(interceptor[0], {"Authorization": [f"Bearer {token(signer[0])}"]})
    assert response == {"continue": True, "status": {"code": 0, "message": f"push signed by {PUSH_ACCOUNT}"}}


def test_a_token_of_the_monitors_account_starts_retraining_too(interceptor, signer):
    response = intercept(interceptor[0], {"Authorization": [f"Bearer {token(signer[0], email=MONITOR_ACCOUNT)}"]})
    assert response == {"continue": True, "status": {"code": 0, "message": f"push signed by {MONITOR_ACCOUNT}"}}


@pytest.mark.parametrize("changes, why", [
    ({"aud": "https://other.example.com/"}, "token refused"),
    ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 4200}, "token refused"),
    ({"email": "someone@evil.example.com"}, "not of the push account"),
    ({"email_verified": False}, "not of the push account"),
    ({"iss": "https://evil.example.com"}, "not Google"),
])
def test_a_token_for_another_audience_account_issuer_or_expired_stops_the_trigger(interceptor, signer, changes, why):
    response = intercept(interceptor[0], {"Authorization": [f"Bearer {token(signer[0], **changes)}"]})
    assert response["continue"] is False and response["status"]["code"] == 16
    assert why in response["status"]["message"]


def test_a_token_signed_by_another_key_stops_the_trigger(interceptor):
    other = crypt.RSASigner.from_string(key_and_certificate()[0], "k1")
    response = intercept(interceptor[0], {"Authorization": [f"Bearer {token(other)}"]})
    assert response["continue"] is False and "token refused" in response["status"]["message"]


def test_no_token_stops_the_trigger_and_a_bad_request_is_answered_not_crashed(interceptor):
    assert intercept(interceptor[0], {})["status"]["message"] == "no bearer token in the Authorization header"
    with urllib.request.urlopen(urllib.request.Request(interceptor[0], data=b"not json", method="POST"),
                                timeout=10) as answer:
        assert json.loads(answer.read()) == {"continue": False, "status": {
            "code": 3, "message": "the interceptor request is not a JSON object"}}


def test_no_token_reaches_the_log(signer):
    url, process = start_interceptor(signer[1])
    secret = token(signer[0], aud="https://other.example.com/")
    intercept(url, {"Authorization": [f"Bearer {secret}"]})
    process.terminate()
    _, log = process.communicate(timeout=10)
    assert "refused: token refused" in log and "POST / HTTP/1.1\" 200" in log
    assert secret not in log and secret.split(".")[1] not in log
