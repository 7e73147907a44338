"""What operators and clients see around the predictions: request ids, the JSON log line of each
request, Prometheus metrics, and the OpenAPI document checked against the API's real answers."""

from __future__ import annotations

import json
import logging
import re
import threading

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
    assert api.get("/healthz", headers={"X-Request-ID": "client-42.a:b_c"}).headers["X-Request-ID"] == "client-42.a:b_c"
    for insane in ("has spaces", "x" * 129, "<script>", ""):
        answered = api.get("/healthz", headers={"X-Request-ID": insane}).headers["X-Request-ID"]
        assert GENERATED_ID.fullmatch(answered), (insane, answered)
    first, second = (api.get("/nowhere").headers["X-Request-ID"] for _ in range(2))
    assert GENERATED_ID.fullmatch(first) and first != second


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
                                      "/metrics", "/openapi.json"}
    assert {"200", "400", "413", "415", "503", "default"} <= set(document["paths"]["/predict"]["post"]["responses"])


def test_real_answers_match_the_openapi_document(serve, registry):
    empty = serve()
    checker = OpenApiChecker(empty.get("/openapi.json").json())
    for route in ("/readyz", "/model"):
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
