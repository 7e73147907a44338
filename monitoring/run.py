"""One run of ``make monitor``: read the live statistics, compare, report, alarm once, trigger once.

1. ``GET /monitoring`` at each API URL (with ``monitor.each_address``, at every address its host
   name resolves to: on GKE a headless Service names every pod); the answers of the production
   version are added up (:func:`monitoring.live.merge_snapshots`), replicas still serving another
   version (a rollout) are listed and left out.
2. The production version's reference is read from the registry and :func:`monitoring.drift.verdict`
   compares; report.json and report.png are written to ``monitor.report_dir``.
3. Drift opens an alarm episode (:mod:`monitoring.alarm`) unless one is open: the product owner
   is emailed once per episode, and with ``monitor.trigger_retraining`` retraining is started
   once per episode. A run with enough images and no drift closes the episode.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import id_token

from monitoring.alarm import AlarmState
from monitoring.drift import verdict as drift_verdict
from monitoring.live import merge_snapshots
from monitoring.reference import REFERENCE_FILE, ReferenceError, read_reference
from monitoring.report import alarm_subject, alarm_text, write_report
from monitoring.stats import MergeError, Stats
from registry.store import Registry, RegistryError, utc_now
from storage import StorageError

FETCH_TIMEOUT_S = 10
TRIGGER_TIMEOUT_S = 30
RETRAIN_LOG = "retrain.log"

# send(subject, text, attachments: {filename: png bytes}) -> where the email went
Sender = Callable[[str, str, dict], str]


class MonitorError(RuntimeError):
    """``make monitor`` cannot compare: no API answers, nothing in production, ...; the message says why."""


def api_urls(given: tuple[str, ...] | list[str], params: Mapping) -> list[str]:
    """The /monitoring bases: the CLI's (or API_URL), else ``monitor.api_urls``, else the local API."""
    urls = [url for item in given for url in item.replace(",", " ").split()]
    if not urls:
        urls = [url.strip() for url in params["monitor"]["api_urls"].split(",") if url.strip()]
    if not urls:
        urls = [f"http://{params['api']['host']}:{params['api']['port']}"]
    return [url.rstrip("/") for url in urls]


def every_address(url: str) -> list[str]:
    """``url`` once per IPv4 address its host resolves to (each pod of a headless Service)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise MonitorError(f"cannot resolve {parts.hostname} ({exc})") from exc
    addresses = sorted({info[4][0] for info in found})
    return [urlunsplit(parts._replace(netloc=f"{address}:{port}")) for address in addresses]


def fetch(url: str) -> dict:
    """The live statistics of one API (``GET <url>/monitoring``)."""
    try:
        response = requests.get(f"{url}/monitoring", timeout=FETCH_TIMEOUT_S)
    except requests.RequestException as exc:
        raise MonitorError(f"cannot read {url}/monitoring: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise MonitorError(f"{url}/monitoring answered {response.status_code}: {response.text[:200]}")
    try:
        snapshot = response.json()
        snapshot["version"], snapshot["stats"]  # noqa: B018 (the shape is checked here, not deep inside)
    except (ValueError, KeyError, TypeError) as exc:
        raise MonitorError(f"{url}/monitoring did not answer live statistics") from exc
    return snapshot


def collect(urls: list[str], production: str) -> tuple[dict, list[str], list[str], list[str]]:
    """The production version's statistics of every URL that answers, merged; the URLs used, those
    skipped (serving another version: a rollout) and those that did not answer (a pod restarting, a
    node gone). One replica that does not answer does not stop the run: the others' statistics are
    a sample of the same traffic (the Service balances it), and the report names what is missing.
    MonitorError when no replica of the production version answers."""
    used, skipped, unanswered, snapshots = [], [], [], []
    for url in urls:
        try:
            snapshot = fetch(url)
        except MonitorError as exc:
            unanswered.append(str(exc))
            continue
        if snapshot["version"] == production:
            snapshots.append(snapshot)
            used.append(url)
        else:
            skipped.append(f"{url} serves {snapshot['version']}, not production {production}")
    if not snapshots:
        raise MonitorError(f"no API serves the production version {production}: " + "; ".join(skipped + unanswered))
    try:
        return merge_snapshots(snapshots), used, skipped, unanswered
    except MergeError as exc:
        raise MonitorError(f"the replicas' statistics do not add up: {exc}") from exc


def dataset_manifest_object(dataset_uri: str) -> str:
    """The object name of the dataset's manifest.json inside its bucket (what the dataset trigger matches)."""
    path = dataset_uri[len("gs://"):].split("/", 1)[1] if dataset_uri.startswith("gs://") and "/" in \
        dataset_uri[len("gs://"):] else ""
    return f"{path.strip('/')}/manifest.json" if path.strip("/") else "manifest.json"


def trigger_token(monitor: Mapping) -> str:
    """The bearer token of a retraining request: ``monitor.trigger_token``, else this machine's Google
    OIDC token for the trigger's audience (on GKE, the pod's Workload Identity account)."""
    if monitor["trigger_token"]:
        return monitor["trigger_token"]
    audience = monitor["trigger_audience"] or monitor["trigger_url"]
    try:
        return id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)
    except (google.auth.exceptions.GoogleAuthError, ValueError) as exc:
        raise MonitorError(f"no OIDC token for the retraining trigger (audience {audience}): "
                           f"{str(exc).splitlines()[0][:200]}; set MONITOR_TRIGGER_TOKEN or run with "
                           "Workload Identity") from exc


def trigger_request(params: Mapping) -> tuple[str, dict]:
    """The URL and the body of a retraining request to the dataset trigger: the shape of GCS's
    notification that the dataset's manifest.json was written."""
    monitor = params["monitor"]
    manifest = dataset_manifest_object(params["dataset_uri"])
    body = {"message": {"attributes": {"eventType": "OBJECT_FINALIZE", "objectId": manifest,
                                       "datasetManifest": manifest, "cause": "monitor-drift"},
                        "messageId": f"monitor-{utc_now()}"}}
    return f"{monitor['trigger_url'].rstrip('/')}/", body


def start_retraining(params: Mapping, report_dir: Path, cwd: str | Path | None) -> str:
    """Start retraining and return how: the EventListener's dataset trigger (``monitor.trigger_url``,
    authenticated by an OIDC bearer token, as Pub/Sub's pushes are), else ``monitor.retrain_command`` in the background."""
    monitor = params["monitor"]
    if monitor["trigger_url"]:
        url, body = trigger_request(params)
        try:
            response = requests.post(url, json=body, timeout=TRIGGER_TIMEOUT_S,
                                     headers={"Authorization": f"Bearer {trigger_token(monitor)}"})
        except requests.RequestException as exc:
            raise MonitorError(f"cannot reach the retraining trigger {monitor['trigger_url']}: "
                               f"{type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise MonitorError(f"the retraining trigger answered {response.status_code}")
        return f"started through the dataset trigger at {monitor['trigger_url']}"
    command = shlex.split(monitor["retrain_command"])
    log_path = report_dir / RETRAIN_LOG
    with open(log_path, "ab") as log:
        try:
            process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise MonitorError(f"cannot start `{monitor['retrain_command']}`: {exc}") from exc
    return f"started `{monitor['retrain_command']}` (pid {process.pid}, log {log_path})"


def monitor_once(params: Mapping, urls: list[str], send: Sender, cwd: str | Path | None = None) -> dict:
    """One run (see the module docstring); returns the report (also written to report.json)."""
    settings = params["monitor"]
    registry = Registry(params["registry_uri"])
    try:
        production = registry.production_version()
        if production is None:
            raise MonitorError(f"nothing is in production at {registry.uri}: there is no model to monitor")
        reference = read_reference(registry, production, "production")
    except (RegistryError, StorageError, ReferenceError) as exc:
        raise MonitorError(str(exc)) from exc
    if settings["each_address"]:
        urls = [address for url in urls for address in every_address(url)]
    snapshot, used, skipped, unanswered = collect(urls, production)
    live = Stats.from_json(snapshot["stats"])
    verdict = drift_verdict(live, reference, settings)
    report = {"at": utc_now(), "version": production, "urls": used, "skipped": skipped, "unanswered": unanswered,
              "replicas": snapshot["replicas"], "window": snapshot["window"], "verdict": verdict,
              "reference": REFERENCE_FILE if reference is not None else None,
              "thresholds": {key: settings[key] for key in ("min_images", "max_psi", "max_class_psi", "low_confidence",
                                                           "max_low_confidence_excess", "max_ood_share")},
              "live": snapshot}
    report["alarm"] = None  # decided once the plot the email carries exists
    report["files"] = write_report(settings["report_dir"], report, live, reference)
    report["alarm"] = alarm(params, report, send, cwd)
    Path(report["files"]["json"]).write_text(dumps(report) + "\n")
    return report


def alarm(params: Mapping, report: dict, send: Sender, cwd) -> dict:
    """Open, act on or close the alarm episode of the production version; what happened."""
    settings, verdict = params["monitor"], report["verdict"]
    state = AlarmState(settings["state_uri"] or f"{params['registry_uri'].rstrip('/')}/monitoring", report["version"])
    episode = state.open_episode()
    result = {"episode": episode, "opened": False, "closed": False, "email": None, "retraining": None}
    if verdict["status"] == "ok" and episode is not None:
        result["closed"] = state.close(episode, {"images": verdict["images"]})
        return result
    if verdict["status"] != "drift":
        return result
    if episode is None:
        episode = state.start({"drifted": verdict["drifted"], "images": verdict["images"]})
        result.update(episode=episode, opened=episode is not None)
        if episode is None:
            return result  # another run opened it meanwhile, and acts on it
    report_dir = Path(settings["report_dir"])
    report_dir.mkdir(parents=True, exist_ok=True)
    if settings["trigger_retraining"] and state.claim(episode, "retrain", {"by": "make monitor"}):
        result["retraining"] = start_retraining(params, report_dir, cwd)
    retraining = result["retraining"] or (
        "already started for this alarm" if state.done(episode, "retrain") else
        "not started automatically (monitor.trigger_retraining is false)")
    if state.claim(episode, "email", {"subject": alarm_subject(report["version"], verdict)}):
        png = Path(report["files"]["png"]).read_bytes()
        result["email"] = send(alarm_subject(report["version"], verdict), alarm_text(report, retraining),
                               {"monitoring-report.png": png})
    return result


def summary_lines(report: Mapping) -> list[str]:
    """What ``make monitor`` prints."""
    verdict, alarm_state = report["verdict"], report["alarm"]
    lines = [f"production {report['version']}: {verdict['status']} ({verdict['images']} images, "
             f"{report['replicas']} replica(s), window {report['window']['started_at']} to {report['window']['until']})"]
    lines += [f"  skipped {item}" for item in report["skipped"]]
    lines += [f"  not counted: {item}" for item in report["unanswered"]]
    if verdict["status"] == "insufficient":
        lines.append(f"  fewer than {verdict['min_images']} images: no verdict yet")
    for entry in verdict["checks"]:
        mark = "DRIFT" if entry["drift"] else "ok"
        lines.append(f"  {entry['name']:<28} {entry['value']:>9.4f}  (threshold {entry['threshold']})  {mark}")
    if alarm_state["episode"] is not None:
        what = "opened" if alarm_state["opened"] else "closed" if alarm_state["closed"] else "still open"
        lines.append(f"alarm episode {alarm_state['episode']}: {what}; email: {alarm_state['email'] or 'not sent now'}; "
                     f"retraining: {alarm_state['retraining'] or 'not started now'}")
    lines.append(f"report: {report['files']['json']}, {report['files']['png']}")
    return lines


def dumps(report: Mapping) -> str:
    return json.dumps(report, indent=1)
