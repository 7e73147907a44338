"""What operators and clients see around the predictions: request ids, the JSON log line of each
request, Prometheus metrics, and the OpenAPI document checked against the API's real answers."""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import pytest
import requests
from api_helpers import (  # noqa: F401  (fixtures)
    CLASSES,
    TIMEOUT_S,
    api,
    image_bytes,
    metric,
    production,
    promote_model,
    registry,
    serve,
    wait_for,
)
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry as SchemaRegistry
from referencing import Resource
from referencing.jsonschema import DRAFT202012

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def access_lines(caplog) -> list[dict]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == "api.access"]


def test_a_sane_request_id_is_echoed_and_anything_else_replaced(api):
    for sane in ("client-42.a:b_c", "-starts-with-a-dash", ":", "x" * 128):
        assert api.get("/healthz", headers={"X-Request-ID": sane}).headers["X-Request-ID"] == sane
    for insane in ("has spaces", "x" * 129, "<script>", "", "é"):
        answered = api.get("/healthz", headers={"X-Request-ID": insane}).headers["X-Request-ID"]
        assert GENERATED_ID.fullmatch(answered), (insane, answered)
    first, second = (api.get("/nowhere").headers["X-Request-ID"] for _ in range(2))
    assert GENERATED_ID.fullmatch(first) and first != second


def test_the_request_id_rule_is_one_the_docs_and_the_openapi_document_quote():
    from helpers import REPO_ROOT

    from api.openapi import ANSWER_HEADERS, REQUEST_ID_PARAMETER
    from api.requestlog import REQUEST_ID_RULE, SANE_REQUEST_ID

    assert REQUEST_ID_RULE == "1-128 characters of letters, digits and `._:-`"
    header = ANSWER_HEADERS["X-Request-ID"]
    assert REQUEST_ID_RULE in header["description"] and REQUEST_ID_RULE in REQUEST_ID_PARAMETER["description"]
    assert header["schema"]["pattern"] == f"^{SANE_REQUEST_ID.pattern}$"
    assert REQUEST_ID_RULE in " ".join((REPO_ROOT / "README.md").read_text().split())
    alphabet = set("abcXYZ019._:-")
    assert all(SANE_REQUEST_ID.fullmatch(c) for c in alphabet) and not SANE_REQUEST_ID.fullmatch("a/b")


def test_each_request_writes_one_json_log_line(api, production, caplog):
    caplog.set_level(logging.INFO, logger="api.access")
    api.predict_png(image_bytes(), headers={"X-Request-ID": "line-1"})
    api.predict_png(b"", headers={"X-Request-ID": "line-2"})
    api.get("/nowhere", headers={"X-Request-ID": "line-3"})

    lines = {line["request_id"]: line for line in access_lines(caplog)}
    assert set(lines) == {"line-1", "line-2", "line-3"}
    assert {key: lines["line-1"][key] for key in ("method", "route", "status", "model_version")} == {
        "method": "POST", "route": "/predict", "status": 200, "model_version": production}
    assert (lines["line-2"]["route"], lines["line-2"]["status"]) == ("/predict", 400)
    assert (lines["line-3"]["route"], lines["line-3"]["status"]) == ("unmatched", 404)
    assert all(isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0 for line in lines.values())
    assert all(line["time"].endswith("+00:00") for line in lines.values())


def test_metrics_count_requests_by_route_and_status_and_time_them(api):
    before = api.get("/metrics")
    assert before.status_code == 200
    assert before.headers["Content-Type"].startswith("text/plain; version=")
    api.predict_png(image_bytes())
    api.predict_png(b"")
    api.get("/nowhere")
    after = api.get("/metrics").text

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before.text, name, **labels)

    assert grew("xray_api_requests_total", route="/predict", status="200") == 1
    assert grew("xray_api_requests_total", route="/predict", status="400") == 1
    assert grew("xray_api_requests_total", route="unmatched", status="404") == 1
    assert grew("xray_api_request_duration_seconds_count", route="/predict") == 2
    assert metric(after, "xray_api_request_duration_seconds_bucket", route="/predict", le="+Inf") == 2
    assert metric(after, "xray_api_request_duration_seconds_sum", route="/predict") > 0
    assert grew("xray_api_images_total", result="ok") == 1
    assert grew("xray_api_images_total", result="not_an_image") == 1


def test_the_latency_from_arrival_includes_the_wait_for_a_worker(registry, production):
    """One worker, held by a request: the next one waits in waitress's queue. Its service time is
    short; its time from arrival holds the wait."""
    from api_helpers import RunningApi

    from api.app import create_app
    from api.serve import start_in_thread

    held, release = threading.Event(), threading.Event()
    app = create_app({"REGISTRY_URI": registry.uri, "RELOAD_INTERVAL_S": 0})

    def hold():
        held.set()
        release.wait(TIMEOUT_S)
        return "held"

    app.add_url_rule("/hold", view_func=hold)
    api = RunningApi(app, start_in_thread(app, threads=1))
    try:
        holder = threading.Thread(target=api.get, args=("/hold",))
        holder.start()
        assert held.wait(TIMEOUT_S)
        waiting = threading.Thread(target=api.get, args=("/healthz",))
        waiting.start()
        # Wait until waitress has read /healthz and queued it for the only worker, which is busy (a
        # fixed sleep alone is not enough on a loaded machine), then hold it there for 0.5 s.
        queue, deadline = api.server.server.task_dispatcher.queue, time.monotonic() + TIMEOUT_S
        while not queue and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert queue, "/healthz never reached waitress's queue"
        threading.Event().wait(0.5)
        release.set()
        holder.join(TIMEOUT_S)
        waiting.join(TIMEOUT_S)
        text = api.get("/metrics").text
    finally:
        release.set()
        api.close()
    assert metric(text, "xray_api_request_latency_seconds_count", route="/healthz") == 1
    service = metric(text, "xray_api_request_duration_seconds_sum", route="/healthz")
    from_arrival = metric(text, "xray_api_request_latency_seconds_sum", route="/healthz")
    assert from_arrival >= 0.45 > service  # held 0.5 s in the queue; a margin for timer granularity


def test_metrics_name_the_served_model_and_count_reloads(serve, registry):
    api = serve()
    assert api.metric("xray_api_model_loaded") == 0
    version = promote_model(registry)
    wait_for(lambda: api.metric("xray_api_model_loaded") == 1, message="the promoted model")
    text = api.get("/metrics").text
    assert metric(text, "xray_api_model_info", version=version) == 1
    assert metric(text, "xray_api_model_reloads_total", result="success") == 1
    assert metric(text, "xray_api_model_reloads_total", result="failure") == 0


def test_the_in_flight_gauge_counts_requests_being_answered(api):
    release = threading.Event()
    classify = api.holder.predictor.classify

    def held_classify(image):
        release.wait(TIMEOUT_S)
        return classify(image)

    api.holder.predictor.classify = held_classify
    clients = [threading.Thread(target=requests.post, args=(api.url + "/predict",),
                                kwargs={"data": image_bytes(), "headers": {"Content-Type": "image/png"},
                                        "timeout": TIMEOUT_S}) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        # The scrape itself is in flight too.
        wait_for(lambda: api.metric("xray_api_requests_in_flight") == 3, message="two held requests")
    finally:
        release.set()
        for client in clients:
            client.join()
    assert api.metric("xray_api_requests_in_flight") == 1


class OpenApiChecker:
    """Checks a real answer against the document: documented status, media type, body, headers."""

    def __init__(self, document: dict):
        self.document = document
        self.schemas = SchemaRegistry().with_resource("urn:api", Resource.from_contents(document, DRAFT202012))

    def check(self, method: str, route: str, response: requests.Response) -> None:
        operations = self.document["paths"][route]
        media_type = response.headers["Content-Type"].split(";")[0]
        if method.lower() not in operations:  # an undocumented method: 405 with the Error body
            assert response.status_code == 405, (method, route, response.status_code)
            self._validate(response.json(), "/components/schemas/Error")
            return
        responses = operations[method.lower()]["responses"]
        status = str(response.status_code) if str(response.status_code) in responses else "default"
        spec = responses[status]
        assert media_type in spec["content"], (route, response.status_code, media_type)
        for name, header in spec["headers"].items():
            assert not header["required"] or name in response.headers, (route, name)
        body = response.json() if media_type == "application/json" else response.text
        self._validate(body, json_pointer("paths", route, method.lower(), "responses", status, "content",
                                          media_type, "schema"))

    def _validate(self, body, pointer: str) -> None:
        validator = Draft202012Validator({"$ref": f"urn:api#{pointer}"}, registry=self.schemas)
        errors = [error.message for error in validator.iter_errors(body)]
        assert not errors, (pointer, errors)


def json_pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def test_the_openapi_document_is_valid_and_describes_every_endpoint(api):
    document = api.get("/openapi.json").json()
    validate_openapi(document)
    assert set(document["paths"]) == {"/predict", "/predict/batch", "/healthz", "/readyz", "/model",
                                      "/metrics", "/openapi.json", "/monitoring"}
    assert {"200", "400", "413", "415", "503", "default"} <= set(document["paths"]["/predict"]["post"]["responses"])


def test_real_answers_match_the_openapi_document(serve, registry):
    empty = serve()
    checker = OpenApiChecker(empty.get("/openapi.json").json())
    for route in ("/readyz", "/model", "/monitoring"):
        checker.check("GET", route, empty.get(route))
    checker.check("POST", "/predict", empty.predict_png(image_bytes()))

    promote_model(registry)
    api = serve()
    png = {"Content-Type": "image/png"}
    answers = [
        ("GET", "/healthz", api.get("/healthz")),
        ("GET", "/readyz", api.get("/readyz")),
        ("GET", "/model", api.get("/model")),
        ("GET", "/metrics", api.get("/metrics")),
        ("GET", "/monitoring", api.get("/monitoring")),
        ("GET", "/openapi.json", api.get("/openapi.json")),
        ("GET", "/predict", api.get("/predict")),
        ("POST", "/predict", api.predict_png(image_bytes())),
        ("POST", "/predict", api.predict_png(b"not an image")),
        ("POST", "/predict", api.predict_png(image_bytes(size=5000))),
        ("POST", "/predict", api.post(data=image_bytes(), headers={"Content-Type": "text/plain"})),
        ("POST", "/predict/batch", api.post("/predict/batch", files=[
            ("image", ("a.png", image_bytes(), "image/png")), ("image", ("b.png", b"junk", "image/png"))])),
        ("POST", "/predict/batch", api.post("/predict/batch", data=image_bytes(), headers=png)),
        ("POST", "/predict/batch", api.post("/predict/batch", files=[("other", ("a.png", b"x"))])),
        ("POST", "/predict/batch", api.post("/predict/batch", files=[("image", ("a.png", b"x"))] * 20)),
    ]
    statuses = {(route, response.status_code) for _, route, response in answers}
    assert {("/predict", 200), ("/predict", 400), ("/predict", 413), ("/predict", 415), ("/predict", 405),
            ("/predict/batch", 200), ("/predict/batch", 400), ("/predict/batch", 413),
            ("/predict/batch", 415)} <= statuses
    for method, route, response in answers:
        checker.check(method, route, response)
    assert list(api.predict_png(image_bytes()).json()["probabilities"]) == CLASSES


def test_the_checker_catches_an_answer_off_the_document(api):
    checker = OpenApiChecker(api.get("/openapi.json").json())
    response = api.get("/healthz")
    response._content = b'{"status": "ok", "extra": 1}'
    with pytest.raises(AssertionError):
        checker.check("GET", "/healthz", response)
