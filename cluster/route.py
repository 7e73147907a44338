"""Which pipeline an event starts on GKE: ``python -m scripts.route < push.json``.

The EventListener of ``tekton/triggers/xray-mlops.yaml`` decides, with its interceptors, which
trigger fires for a request; each trigger's TriggerTemplate creates a PipelineRun of one pipeline.
This module runs those same interceptors on a payload, reading the CEL expressions from the YAML
and evaluating them with cel-python, so that the routing rule is tested without a cluster and
cannot drift from what the cluster runs.

What is simulated, and how:

- ``github`` interceptor: the ``X-GitHub-Event`` header must be one of its ``eventTypes``. The
  webhook signature is not checked (the request is taken as authentic).
- ``cel`` interceptor: ``filter`` must evaluate to true; ``overlays`` are added to
  ``extensions`` for the interceptors after it, as Tekton Triggers does. Triggers' CEL functions
  ``parseURL`` and ``compareSecret`` are provided; ``compareSecret`` compares against the secret
  values given, and with none given treats every secret as matching. As in Triggers, JSON numbers
  are doubles, and an expression that fails to evaluate (a missing key) stops the trigger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import celpy
import yaml
from celpy import celtypes

from core.config import REPO_ROOT

LISTENER_FILE = REPO_ROOT / "tekton" / "triggers" / "xray-mlops.yaml"
NONE = "none"


class RouteError(ValueError):
    """The listener cannot be evaluated locally, or an event starts more than one pipeline."""


@dataclass
class Request:
    """What the EventListener sees of an HTTP request."""

    body: Mapping[str, Any]
    headers: Mapping[str, list[str]] = field(default_factory=dict)
    url: str = "/"


@dataclass
class Outcome:
    """Whether a trigger fires for a request, and if not, which interceptor stopped it and why."""

    trigger: str
    pipeline: str
    fired: bool
    stopped_by: str = ""
    reason: str = ""


def canonical_header(name: str) -> str:
    """Go's canonical form of a header name (``x-github-event`` -> ``X-Github-Event``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def github_push_request(body: Mapping[str, Any], event: str = "push", url: str = "/") -> Request:
    """A request as GitHub delivers a webhook event of type ``event``."""
    return Request(body=body, headers={canonical_header("X-GitHub-Event"): [event]}, url=url)


def load_yaml_documents(folder: Path) -> list[dict]:
    """Every YAML document under ``folder`` (aliases expanded, as kustomize expands them)."""
    documents = []
    for path in sorted(folder.rglob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def load_listener(path: Path = LISTENER_FILE) -> tuple[dict, dict[str, str]]:
    """The EventListener in ``path`` and, per TriggerTemplate beside it, the pipeline it runs."""
    documents = load_yaml_documents(path.parent)
    listeners = [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "EventListener"]
    if len(listeners) != 1:
        raise RouteError(f"{path} must hold exactly one EventListener, found {len(listeners)}")
    pipelines = {}
    for doc in documents:
        if doc.get("kind") != "TriggerTemplate":
            continue
        runs = [r for r in doc["spec"].get("resourcetemplates", []) if r.get("kind") == "PipelineRun"]
        if len(runs) != 1:
            raise RouteError(f"TriggerTemplate {doc['metadata']['name']} must create exactly one PipelineRun")
        pipelines[doc["metadata"]["name"]] = runs[0]["spec"]["pipelineRef"]["name"]
    return listeners[0], pipelines


def _parse_url(url: celtypes.StringType) -> celtypes.Value:
    """Triggers' ``parseURL()``: the parts of a URL, ``query`` joining repeated values with commas."""
    parts = urlsplit(str(url))
    multi = parse_qs(parts.query, keep_blank_values=True)
    return celpy.json_to_cel({
        "scheme": parts.scheme, "host": parts.netloc, "path": parts.path, "rawQuery": parts.query,
        "fragment": parts.fragment, "query": {k: ",".join(v) for k, v in multi.items()},
        "queryStrings": multi,
    })


class CelEvaluator:
    """Compiles and evaluates Triggers CEL expressions with cel-python."""

    def __init__(self, secrets: Mapping[tuple[str, str], str] | None = None):
        self.environment = celpy.Environment()
        self.secrets = secrets
        self.functions = {"parseURL": _parse_url, "compareSecret": self._compare_secret}

    def _compare_secret(self, value, key, name, namespace=None) -> celtypes.BoolType:
        if self.secrets is None:
            return celtypes.BoolType(True)
        return celtypes.BoolType(self.secrets.get((str(name), str(key))) == str(value))

    def evaluate(self, expression: str, request: Request, extensions: Mapping[str, Any]) -> Any:
        """The value of ``expression`` as JSON-like Python; raises celpy.CELEvalError on failure."""
        program = self.environment.program(self.environment.compile(expression), functions=self.functions)
        # Triggers decodes the body with Go's encoding/json: every number is a double.
        body = json.loads(json.dumps(request.body), parse_int=float)
        result = program.evaluate({
            "body": celpy.json_to_cel(body),
            "header": celpy.json_to_cel({k: list(v) for k, v in request.headers.items()}),
            "extensions": celpy.json_to_cel(dict(extensions)),
            "requestURL": celtypes.StringType(request.url),
        })
        return json.loads(json.dumps(result, cls=celpy.CELJSONEncoder))


def _params(interceptor: Mapping[str, Any]) -> dict[str, Any]:
    return {p["name"]: p["value"] for p in interceptor.get("params", [])}


def evaluate_trigger(trigger: Mapping[str, Any], pipelines: Mapping[str, str], request: Request,
                     cel: CelEvaluator) -> Outcome:
    """Run ``trigger``'s interceptors in order on ``request``, as the EventListener does."""
    name = trigger.get("name", "?")
    template = (trigger.get("template") or {}).get("ref")
    if template not in pipelines:
        raise RouteError(f"trigger {name}: template {template!r} is not a TriggerTemplate beside the listener")
    outcome = Outcome(trigger=name, pipeline=pipelines[template], fired=False)
    extensions: dict[str, Any] = {}
    for interceptor in trigger.get("interceptors", []):
        kind = (interceptor.get("ref") or {}).get("name")
        label = interceptor.get("name") or kind
        params = _params(interceptor)
        if kind == "github":
            events = {value for key, values in request.headers.items()
                      if key.lower() == "x-github-event" for value in values}
            if not events & set(params.get("eventTypes", [])):
                outcome.stopped_by, outcome.reason = label, f"event {sorted(events)} is not one of {params.get('eventTypes')}"
                return outcome
        elif kind == "cel":
            try:
                if "filter" in params and cel.evaluate(params["filter"], request, extensions) is not True:
                    outcome.stopped_by, outcome.reason = label, f"filter is false: {params['filter']}"
                    return outcome
                for overlay in params.get("overlays", []):
                    extensions[overlay["key"]] = cel.evaluate(overlay["expression"], request, extensions)
            except celpy.CELEvalError as exc:
                outcome.stopped_by, outcome.reason = label, f"expression failed: {exc.args[0]}"
                return outcome
        else:
            raise RouteError(f"trigger {name}: interceptor {kind!r} cannot be evaluated locally")
    outcome.fired = True
    return outcome


def evaluate_listener(request: Request, listener_file: Path = LISTENER_FILE,
                      secrets: Mapping[tuple[str, str], str] | None = None) -> list[Outcome]:
    """The outcome of every trigger of the EventListener for ``request``."""
    listener, pipelines = load_listener(listener_file)
    cel = CelEvaluator(secrets)
    return [evaluate_trigger(trigger, pipelines, request, cel) for trigger in listener["spec"].get("triggers", [])]


def started_pipeline(outcomes: list[Outcome]) -> str:
    """The pipeline the fired triggers start, or ``none``; more than one is an error in the listener."""
    started = sorted({o.pipeline for o in outcomes if o.fired})
    if len(started) > 1:
        raise RouteError(f"the event starts {len(started)} pipelines ({', '.join(started)}); the listener must start one")
    return started[0] if started else NONE


def route(request: Request, listener_file: Path = LISTENER_FILE,
          secrets: Mapping[tuple[str, str], str] | None = None) -> str:
    """The pipeline ``request`` starts, or ``none``."""
    return started_pipeline(evaluate_listener(request, listener_file, secrets))
