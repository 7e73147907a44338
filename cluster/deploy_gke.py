"""Roll the API on GKE onto a promoted version: ``python -m scripts.deploy_gke VERSION``.

``make promote DEPLOY=gke`` calls :func:`rollout` once the production pointer names VERSION. The
API reloads the production model by itself; the rollout makes the cluster run the API *image*
the version passed its acceptance tests with (its ``images.api``), records the version on the
pod template (so ``kubectl rollout history`` tells which version each revision served), scales
the Deployment from 0 to 1 on the first promotion, waits with ``kubectl rollout status`` and then
asks every ready pod's ``/readyz`` which version it serves, until all serve VERSION. Then the
monitoring CronJob (tekton/deploy/xray-monitor.yaml) is pointed at the version's trainer image
(``images.trainer``: the code that wrote its monitoring reference) and resumed, so `make monitor`
follows production without a hand step; rollback takes the same path.

Also the cluster side of other commands: :func:`kubectl` runs kubectl and raises
:class:`KubectlError` with its message.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.store import Registry, RegistryError
from storage import StorageError

DEFAULT_NAMESPACE = "xray-mlops"
DEPLOYMENT = "xray-api"
CONTAINER = "api"
API_PORT = 8080
VERSION_ANNOTATION = "xray-mlops.io/model-version"
MONITOR_CRONJOB = "xray-monitor"
MONITOR_CONTAINER = "monitor"
POLL_INTERVAL_S = 2.0


class KubectlError(RuntimeError):
    """kubectl failed; the message is its own last line of error output."""


class RolloutError(RuntimeError):
    """The Deployment did not roll out, or its pods do not serve the promoted version."""


def kubectl(*args: str, namespace: str | None = None, timeout: float = 60) -> str:
    """Run ``kubectl ARGS`` (the environment variable KUBECTL may name another binary); its output."""
    command = [os.environ.get("KUBECTL", "kubectl"), *(["--namespace", namespace] if namespace else []), *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise KubectlError(f"{command[0]} not found: install kubectl and get credentials for the cluster") from exc
    except subprocess.TimeoutExpired as exc:
        raise KubectlError(f"`kubectl {' '.join(args)}` did not answer within {timeout:.0f} s") from exc
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise KubectlError(f"`kubectl {' '.join(args)}` failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result.stdout


def kubectl_json(*args: str, namespace: str | None = None, timeout: float = 60) -> Any:
    return json.loads(kubectl(*args, "-o", "json", namespace=namespace, timeout=timeout))


def default_namespace() -> str:
    """GKE_NAMESPACE (set in the Tekton steps), else the namespace of tekton/kustomization.yaml."""
    return os.environ.get("GKE_NAMESPACE") or DEFAULT_NAMESPACE


def image_of(metadata: Mapping[str, Any], kind: str) -> str | None:
    """The image (``api`` or ``trainer``) a version was built and accepted with, if training recorded one."""
    images = metadata.get("images") or (metadata.get("params") or {}).get("images") or {}
    return images.get(kind) or None


def template_patch(version: str, container: str, image: str | None) -> dict:
    """A pod template's part of a strategic merge patch: the version annotation, and ``container``'s
    image when there is one (containers merge by name)."""
    spec = {"spec": {"containers": [{"name": container, "image": image}]}} if image else {}
    return {"metadata": {"annotations": {VERSION_ANNOTATION: version}}, **spec}


def monitor_patch(version: str, image: str) -> dict:
    """The strategic merge patch that points the monitoring CronJob at ``image`` and resumes it."""
    return {"spec": {"suspend": False, "jobTemplate": {"spec": {"template": template_patch(version, MONITOR_CONTAINER, image)}}}}


def point_monitor(version: str, metadata: Mapping[str, Any], namespace: str) -> str:
    """Point the monitoring CronJob at ``version``'s trainer image and resume it; a sentence saying
    what was done. Not a reason to undo a promotion (the API serves the version): a failure is a
    warning that gives the commands to run by hand."""
    image = image_of(metadata, "trainer")
    if not image:
        return (f"monitoring: cronjob/{MONITOR_CRONJOB} left as it is: {version} records no images.trainer "
                "(it was not trained by the Tekton pipeline)")
    try:
        kubectl("patch", "cronjob", MONITOR_CRONJOB, "--type", "strategic", "--patch",
                json.dumps(monitor_patch(version, image)), namespace=namespace)
    except KubectlError as exc:
        return (f"WARNING: monitoring does not follow {version}: {exc}; run `kubectl --namespace {namespace} set image "
                f"cronjob/{MONITOR_CRONJOB} {MONITOR_CONTAINER}={image}` and `kubectl --namespace {namespace} patch "
                f"cronjob {MONITOR_CRONJOB} -p '{{\"spec\": {{\"suspend\": false}}}}'`")
    return f"monitoring: cronjob/{MONITOR_CRONJOB} runs {image} for {version} (resumed)"


def rollout_patch(version: str, image: str | None, scale_from_zero: bool) -> dict:
    """The strategic merge patch of the Deployment: one patch, so one new ReplicaSet."""
    return {"spec": {**({"replicas": 1} if scale_from_zero else {}), "template": template_patch(version, CONTAINER, image)}}


@dataclass
class PodAnswer:
    pod: str
    model_version: str | None
    detail: str


@dataclass
class Rollout:
    """What a rollout did: the pods serving the version, and what became of the monitoring CronJob."""

    answers: list[PodAnswer]
    monitor: str


def pod_selector(deployment_spec: dict) -> str:
    """The label selector (``k=v,...``) of a Deployment's pods."""
    labels = deployment_spec["spec"]["selector"]["matchLabels"]
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def serving_pods(namespace: str, selector: str) -> list[str]:
    """The ready, not terminating pods ``selector`` selects."""
    pods = kubectl_json("get", "pods", "--selector", selector, namespace=namespace)["items"]
    ready = []
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if not pod["metadata"].get("deletionTimestamp") and conditions.get("Ready") == "True":
            ready.append(pod["metadata"]["name"])
    return sorted(ready)


def ask_pod(namespace: str, pod: str) -> PodAnswer:
    """What the pod's /readyz says it serves, through the API server's pod proxy."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}:{API_PORT}/proxy/readyz"
    try:
        answer = json.loads(kubectl("get", "--raw", path, timeout=15))
    except (KubectlError, json.JSONDecodeError) as exc:
        return PodAnswer(pod, None, str(exc))
    detail = answer.get("wanted_error") or answer.get("status", "")
    return PodAnswer(pod, answer.get("model_version"), str(detail))


def wait_until_served(version: str, namespace: str, deployment: str, selector: str,
                      timeout_s: float) -> list[PodAnswer]:
    """Poll until every ready pod of ``deployment`` (``selector``) serves ``version``; raise
    RolloutError naming the pods that do not."""
    deadline = time.monotonic() + timeout_s
    while True:
        answers = [ask_pod(namespace, pod) for pod in serving_pods(namespace, selector)]
        if answers and all(a.model_version == version for a in answers):
            return answers
        if time.monotonic() >= deadline:
            seen = "; ".join(f"{a.pod}: {a.model_version or 'nothing'} ({a.detail})" for a in answers) or "no ready pod"
            raise RolloutError(f"{deployment} pods do not all serve {version} after {timeout_s:.0f} s: {seen}")
        time.sleep(POLL_INTERVAL_S)


def rollout(version: str, params: Mapping[str, Any], namespace: str | None = None,
            deployment: str = DEPLOYMENT, timeout_s: float | None = None) -> Rollout:
    """Roll the API Deployment onto ``version`` (already production), wait until its pods serve it,
    then point the monitoring CronJob at it (:func:`point_monitor`).

    The template and replica count are saved first; if the rollout or the check fails (or anything
    else stops it, a signal included) they are put back, so the Deployment runs what it ran before;
    the caller, promotion, moves the pointer back. Raises RolloutError (saying whether the restore
    worked) and KubectlError (the cluster could not be reached before anything changed).
    """
    namespace = namespace or default_namespace()
    timeout_s = float(timeout_s if timeout_s is not None else params["api"]["start_timeout_s"])
    try:
        metadata = Registry(params["registry_uri"]).metadata(version)
    except (StorageError, RegistryError) as exc:
        raise RolloutError(f"cannot read {version} from the registry: {exc}") from exc
    current = kubectl_json("get", "deployment", deployment, namespace=namespace)
    try:
        selector = pod_selector(current)
    except (KeyError, TypeError, AttributeError) as exc:
        raise RolloutError(f"{deployment} has no spec.selector.matchLabels to find its pods by") from exc
    patch = rollout_patch(version, image_of(metadata, "api"), scale_from_zero=not current["spec"].get("replicas"))
    wait_s = rollout_wait_s(timeout_s, current)
    try:
        kubectl("patch", "deployment", deployment, "--type", "strategic", "--patch", json.dumps(patch),
                namespace=namespace)
        try:
            kubectl("rollout", "status", f"deployment/{deployment}", f"--timeout={wait_s:.0f}s",
                    namespace=namespace, timeout=wait_s + 30)
        except KubectlError as exc:
            raise RolloutError(f"{deployment} did not roll out onto {version}: {exc}") from exc
        answers = wait_until_served(version, namespace, deployment, selector, timeout_s)
        return Rollout(answers, point_monitor(version, metadata, namespace))
    except BaseException as exc:
        undone = restore_deployment(current, namespace, deployment)
        if isinstance(exc, (KubectlError, RolloutError)):
            raise RolloutError(f"{exc}; {undone}") from exc
        raise


def rollout_wait_s(timeout_s: float, current: Mapping[str, Any]) -> float:
    """How long `kubectl rollout status` may take: ``timeout_s`` per replica (pods are replaced a
    few at a time), and at least the Deployment's own progressDeadlineSeconds, so Kubernetes's
    verdict ("exceeded its progress deadline") decides when it is the longer one."""
    spec = current.get("spec") or {}
    replicas = max(1, int(spec.get("replicas") or 1))
    return max(timeout_s * replicas, float(spec.get("progressDeadlineSeconds") or 0))


def restore_deployment(saved: Mapping[str, Any], namespace: str, deployment: str) -> str:
    """Put back the pod template and replica count ``saved`` before the rollout (a new ReplicaSet
    of the old template, so the old image and annotation serve again); a sentence saying so."""
    spec = saved["spec"]
    patch = [{"op": "add", "path": "/spec/template", "value": spec["template"]}]
    if "replicas" in spec:
        patch.append({"op": "add", "path": "/spec/replicas", "value": spec["replicas"]})
    try:
        kubectl("patch", "deployment", deployment, "--type", "json", "--patch", json.dumps(patch), namespace=namespace)
    except KubectlError as exc:
        return (f"{deployment} could not be restored ({exc}): run `kubectl --namespace {namespace} rollout undo "
                f"deployment/{deployment}`")
    return f"{deployment} was restored to the template it had before"
