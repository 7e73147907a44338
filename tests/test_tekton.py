"""The Tekton manifests as the cluster gets them: the real `kubectl kustomize tekton/` output.

Checks what the schemas cannot (validate-manifests covers field names and types): every make
target a step runs exists, every $(params/workspaces/results/tasks...) reference is declared,
every taskRef, pipelineRef, template and binding names an object that exists, and the project's
rules (descriptions, pinned images, params through env, GPU placement, timeouts, retries).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, clean_env

from cluster.deploy_gke import DEPLOYMENT, MONITOR_CRONJOB
from cluster.route import LISTENER_FILE

TEKTON = REPO_ROOT / "tekton"
VALIDATOR = REPO_ROOT.parent / "shared" / "tools" / "validate-manifests"
REFERENCE = re.compile(r"\$\(([^()]*)\)")
# A dotted name: $(params.x), $(tasks.t.results.r). Shell command substitutions have spaces.
VARIABLE = re.compile(r"[A-Za-z]\w*(\.[\w-]+)+")
MAKE_TARGET = re.compile(r"\bmake\s+([A-Za-z0-9][A-Za-z0-9_-]*)")
NETWORK_TASKS = {"git-clone", "buildah-build", "validate-data", "notify", "notify-failure"}
GPU_TASKS = {"train", "retrain"}
# Targets the lead is adding on main (retraining/model-test issue); remove this once they exist.
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def kustomize(path: Path) -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return kustomize(TEKTON)


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def strings(node):
    """Every string inside ``node``, recursively."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def references(node) -> set[str]:
    """The Tekton/Triggers variables ``node`` refers to, e.g. ``params.x`` for ``$(params.x)``."""
    return {match for text in strings(node) for match in REFERENCE.findall(text) if VARIABLE.fullmatch(match)}


def declared(entries) -> set[str]:
    return {entry["name"] for entry in entries or []}


def makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*):(?!=)", text, flags=re.MULTILINE))


def step_make_targets(docs: list[dict]) -> set[str]:
    scripts = [step.get("script", "") for task in of_kind(docs, "Task").values() for step in task["spec"]["steps"]]
    return {target for script in scripts for target in MAKE_TARGET.findall(script)}


@needs_kubectl
def test_validate_manifests_reports_no_error_on_the_kustomize_output():
    if not VALIDATOR.exists():
        pytest.skip(f"{VALIDATOR} is not here (shared/ beside the repository)")
    rendered_text = subprocess.run(["kubectl", "kustomize", str(TEKTON)], capture_output=True, text=True,
                                   check=True, timeout=60).stdout
    result = subprocess.run([sys.executable, str(VALIDATOR), "-"], input=rendered_text, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(" 0 errors")


def test_the_steps_run_the_make_targets_the_pipelines_are_made_of(rendered):
    assert step_make_targets(rendered) == {"validate-data", "train", "retrain", "unittest", "notify",
                                           "model-test", "promote"}


@pytest.mark.parametrize("target", ["validate-data", "train", "unittest", "notify", "promote"])
def test_every_make_target_a_step_runs_exists_in_the_makefile(target):
    assert target in makefile_targets()


@pytest.mark.parametrize("target", ["retrain", "model-test"])
def test_make_targets_of_the_retraining_and_model_test_pipelines_exist(target):
    assert target in makefile_targets()


def test_every_task_reference_is_declared_by_the_task(rendered):
    context = {"taskRun.name", "taskRun.namespace", "taskRun.uid", "task.name", "task.retry-count"}
    for name, task in of_kind(rendered, "Task").items():
        spec = task["spec"]
        params, workspaces, results = declared(spec.get("params")), declared(spec.get("workspaces")), declared(spec.get("results"))
        for ref in references({k: v for k, v in spec.items() if k not in ("params", "description")}):
            head, _, rest = ref.partition(".")
            if head == "params":
                assert rest in params, f"Task {name}: $({ref}) is not a declared param"
            elif head == "workspaces":
                assert rest.rsplit(".", 1)[0] in workspaces, f"Task {name}: $({ref}) is not a declared workspace"
            elif head == "results":
                assert rest.endswith(".path") and rest[:-5] in results, f"Task {name}: $({ref}) is not a declared result"
            elif head == "context":
                assert rest in context, f"Task {name}: $({ref}) is not a context variable"
            else:
                pytest.fail(f"Task {name}: $({ref}) is neither a Tekton variable nor escaped")


def test_every_taskref_names_a_task_in_tekton(rendered):
    tasks = of_kind(rendered, "Task")
    for name, pipeline in of_kind(rendered, "Pipeline").items():
        for pipeline_task in pipeline["spec"]["tasks"] + pipeline["spec"].get("finally", []):
            ref = pipeline_task["taskRef"]
            assert set(ref) == {"name"} and ref["name"] in tasks, f"Pipeline {name}: {pipeline_task['name']} -> {ref}"


def test_every_pipeline_reference_and_binding_is_declared(rendered):
    tasks = of_kind(rendered, "Task")
    context = {"pipeline.name", "pipelineRun.name", "pipelineRun.namespace", "pipelineRun.uid"}
    for name, pipeline in of_kind(rendered, "Pipeline").items():
        spec = pipeline["spec"]
        params, workspaces = declared(spec.get("params")), declared(spec.get("workspaces"))
        regular = {t["name"]: t for t in spec["tasks"]}
        final = {t["name"]: t for t in spec.get("finally", [])}
        for pipeline_task in list(regular.values()) + list(final.values()):
            where = f"Pipeline {name}, task {pipeline_task['name']}"
            task_spec = tasks[pipeline_task["taskRef"]["name"]]["spec"]
            given = declared(pipeline_task.get("params"))
            assert given <= declared(task_spec.get("params")), f"{where}: passes undeclared params"
            required = {p["name"] for p in task_spec.get("params", []) if "default" not in p}
            assert required <= given, f"{where}: misses params {sorted(required - given)}"
            bound = {w["name"]: w["workspace"] for w in pipeline_task.get("workspaces", [])}
            needed = {w["name"] for w in task_spec.get("workspaces", []) if not w.get("optional")}
            assert set(bound) <= declared(task_spec.get("workspaces")) and needed <= set(bound), where
            assert set(bound.values()) <= workspaces, f"{where}: binds an undeclared pipeline workspace"
            for after in pipeline_task.get("runAfter", []):
                assert after in regular, f"{where}: runAfter {after} is not a task"
        for ref in references({k: v for k, v in spec.items() if k not in ("params", "workspaces", "description")}):
            parts = ref.split(".")
            if parts[0] == "params":
                assert parts[1] in params, f"Pipeline {name}: $({ref}) is not a declared param"
            elif parts[0] == "context":
                assert ".".join(parts[1:]) in context, f"Pipeline {name}: $({ref}) is not a context variable"
            elif ref == "tasks.status":
                continue
            elif parts[0] == "tasks" and parts[2] == "results":
                assert parts[1] in regular, f"Pipeline {name}: $({ref}) names no task"
                task_spec = tasks[regular[parts[1]]["taskRef"]["name"]]["spec"]
                assert parts[3] in declared(task_spec.get("results")), f"Pipeline {name}: $({ref}) is not a declared result"
            elif parts[0] == "tasks" and parts[2] == "status":
                assert parts[1] in regular, f"Pipeline {name}: $({ref}) names no task"
            else:
                pytest.fail(f"Pipeline {name}: $({ref}) is not a reference Tekton resolves")
        for ref in references(list(regular.values())):
            assert ref != "tasks.status" and not ref.endswith(".status"), f"Pipeline {name}: task statuses only exist in finally"


def test_every_pipeline_task_has_a_timeout_and_network_tasks_are_retried(rendered):
    for name, pipeline in of_kind(rendered, "Pipeline").items():
        for pipeline_task in pipeline["spec"]["tasks"] + pipeline["spec"].get("finally", []):
            where = f"Pipeline {name}, task {pipeline_task['name']}"
            assert pipeline_task.get("timeout"), f"{where} has no timeout"
            if pipeline_task["taskRef"]["name"] in NETWORK_TASKS:
                assert pipeline_task.get("retries", 0) >= 1, f"{where} touches the network and is not retried"


def test_results_carry_the_version_from_training_to_the_acceptance_tests_and_the_report(rendered):
    pipelines = of_kind(rendered, "Pipeline")
    for name, task in (("training", "train"), ("retraining", "retrain")):
        spec = pipelines[name]["spec"]
        by_name = {t["name"]: t for t in spec["tasks"] + spec["finally"]}
        version = f"$(tasks.{task}.results.model-version)"
        for consumer in ("acceptance-test", "notify"):
            given = {p["name"]: p["value"] for p in by_name[consumer]["params"]}
            assert given["model-version"] == version, f"{name}/{consumer}"
        assert {r["name"]: r["value"] for r in spec["results"]}["model-version"] == version
        assert {t["name"] for t in spec["finally"]} == {"notify", "notify-failure"}
    retraining = {t["name"]: t for t in pipelines["retraining"]["spec"]["tasks"]}
    assert retraining["acceptance-test"]["when"] == [
        {"input": "$(tasks.retrain.results.model-version)", "operator": "notin", "values": [""]}]


def test_training_steps_record_the_images_and_the_commit(rendered):
    tasks = of_kind(rendered, "Task")
    for name in GPU_TASKS:
        env = {e["name"]: e.get("value") for e in tasks[name]["spec"]["steps"][0]["env"]}
        assert env == {"IMAGES_TRAINER": "$(params.trainer-image)", "IMAGES_API": "$(params.api-image)",
                       "GIT_COMMIT": "$(params.git-commit)"}
    for name in ("training", "retraining"):
        spec = of_kind(rendered, "Pipeline")[name]["spec"]
        task = next(t for t in spec["tasks"] if t["taskRef"]["name"] in GPU_TASKS)
        given = {p["name"]: p["value"] for p in task["params"]}
        assert given == {"trainer-image": "$(tasks.build-trainer.results.IMAGE_REF)",
                         "api-image": "$(tasks.build-api.results.IMAGE_REF)",
                         "git-commit": "$(tasks.clone.results.commit)"}


def test_only_the_gpu_tasks_request_a_gpu_and_their_runs_go_to_the_gpu_pool(rendered):
    for name, task in of_kind(rendered, "Task").items():
        gpus = [s.get("computeResources", {}).get("limits", {}).get("nvidia.com/gpu") for s in task["spec"]["steps"]]
        assert any(gpus) == (name in GPU_TASKS), name
    templates = of_kind(rendered, "TriggerTemplate")
    for template, task in (("training", "train"), ("retraining", "retrain")):
        run = templates[template]["spec"]["resourcetemplates"][0]
        [spec] = run["spec"]["taskRunSpecs"]
        assert spec["pipelineTaskName"] == task
        assert spec["podTemplate"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "$(tt.params.gpu-accelerator)"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["podTemplate"]["tolerations"]
    assert "taskRunSpecs" not in templates["model-test"]["spec"]["resourcetemplates"][0]["spec"]


def test_trigger_templates_create_runs_of_existing_pipelines_with_their_params(rendered):
    pipelines = of_kind(rendered, "Pipeline")
    for name, template in of_kind(rendered, "TriggerTemplate").items():
        tt_params = declared(template["spec"]["params"])
        [run] = template["spec"]["resourcetemplates"]
        for ref in references(run):
            assert ref.startswith("tt.params.") and ref[len("tt.params."):] in tt_params, f"{name}: $({ref})"
        pipeline = pipelines[run["spec"]["pipelineRef"]["name"]]["spec"]
        given = declared(run["spec"]["params"])
        required = {p["name"] for p in pipeline["params"] if "default" not in p}
        assert required <= given <= declared(pipeline["params"]), name
        assert declared(run["spec"]["workspaces"]) == declared(pipeline.get("workspaces"))
        workspaces = {w["name"]: w for w in run["spec"]["workspaces"]}
        assert "volumeClaimTemplate" in workspaces["source"], name
        assert workspaces["git-credentials"]["secret"] == {"secretName": "xray-mlops-git", "optional": True}, name
        assert run["spec"]["timeouts"]["pipeline"], name
        names = {t["name"] for t in pipeline["tasks"]}
        assert {s["pipelineTaskName"] for s in run["spec"].get("taskRunSpecs", [])} <= names
        assert run["spec"]["params"][1] == {"name": "revision", "value": "$(tt.params.revision)"}


def test_every_trigger_names_existing_bindings_and_a_template_they_fill(rendered):
    bindings, templates = of_kind(rendered, "TriggerBinding"), of_kind(rendered, "TriggerTemplate")
    [listener] = of_kind(rendered, "EventListener").values()
    for trigger in listener["spec"]["triggers"]:
        template = templates[trigger["template"]["ref"]]
        bound = set()
        for binding in trigger["bindings"]:
            bound |= declared(bindings[binding["ref"]]["spec"]["params"])
        required = {p["name"] for p in template["spec"]["params"] if "default" not in p}
        assert required <= bound, f"trigger {trigger['name']} leaves {sorted(required - bound)} unbound"


def test_the_route_script_reads_the_listener_kustomize_installs(rendered):
    [installed] = of_kind(rendered, "EventListener").values()
    source = next(doc for doc in yaml.safe_load_all(LISTENER_FILE.read_text()) if doc)
    assert installed["spec"] == source["spec"]


def test_the_push_filter_keeps_the_branch_of_config_env(rendered):
    config = of_kind(rendered, "ConfigMap")["xray-mlops-config"]["data"]
    [listener] = of_kind(rendered, "EventListener").values()
    interceptor = listener["spec"]["triggers"][0]["interceptors"][1]
    push_filter = next(p["value"] for p in interceptor["params"] if p["name"] == "filter")
    assert f"body.ref == 'refs/heads/{config['GIT_BRANCH']}'" in push_filter
    binding = of_kind(rendered, "TriggerBinding")["xray-mlops-config"]["spec"]["params"]
    assert {p["name"]: p["value"] for p in binding} == {
        "git-url": config["GIT_URL"], "branch": config["GIT_BRANCH"],
        "image-repo": config["IMAGE_REPO"], "gpu-accelerator": config["GPU_ACCELERATOR"]}


def test_github_interceptor_checks_the_webhook_secret_and_keeps_push_events(rendered):
    [listener] = of_kind(rendered, "EventListener").values()
    for trigger in listener["spec"]["triggers"]:
        if trigger["name"].startswith("push-"):
            github = trigger["interceptors"][0]
            params = {p["name"]: p["value"] for p in github["params"]}
            assert github["ref"]["name"] == "github"
            assert params == {"secretRef": {"secretName": "xray-mlops-github-webhook", "secretKey": "token"},
                              "eventTypes": ["push"]}


# The make targets whose steps email the product owner themselves (an outcome, a report).
EMAILING_TARGETS = {"train", "retrain", "notify", "model-test"}


def test_every_task_that_emails_can_log_in_to_the_smtp_server(rendered):
    for name, task in of_kind(rendered, "Task").items():
        scripts = " ".join(step.get("script", "") for step in task["spec"]["steps"])
        if set(MAKE_TARGET.findall(scripts)) & EMAILING_TARGETS or "scripts.notify" in scripts:
            env = {e["name"]: e for e in task["spec"].get("stepTemplate", {}).get("env", [])}
            assert env["SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "xray-mlops-smtp", name


def test_everything_is_documented(rendered):
    for kind in ("Task", "Pipeline"):
        for name, doc in of_kind(rendered, kind).items():
            assert doc["spec"].get("description"), f"{kind} {name} has no description"
            for section in ("params", "workspaces", "results"):
                for entry in doc["spec"].get(section, []):
                    assert entry.get("description"), f"{kind} {name}: {section} {entry['name']} has no description"
    for name, template in of_kind(rendered, "TriggerTemplate").items():
        assert all(p.get("description") for p in template["spec"]["params"]), name


def test_params_reach_scripts_through_env_never_pasted_into_a_script(rendered):
    for name, task in of_kind(rendered, "Task").items():
        for step in task["spec"]["steps"]:
            for ref in references(step.get("script", "")):
                assert ref.startswith(("results.", "workspaces.")), f"Task {name}, step {step['name']}: $({ref}) in a script"


def test_every_image_is_pinned_by_digest_or_is_an_image_the_run_built(rendered):
    config = of_kind(rendered, "ConfigMap")["xray-mlops-config"]["data"]
    for name, task in of_kind(rendered, "Task").items():
        defaults = {p["name"]: p.get("default") for p in task["spec"].get("params", [])}
        for container in task["spec"]["steps"] + task["spec"].get("sidecars", []):
            image = container["image"]
            match = re.fullmatch(r"\$\(params\.([a-zA-Z0-9_-]+)\)", image)
            if match and defaults.get(match.group(1)):
                image = defaults[match.group(1)]
            elif match:
                continue  # an image this run built, passed on by digest (IMAGE_REF)
            if image == config["CLUSTER_IMAGE"] and image.startswith(config["IMAGE_REPO"] + "/"):
                continue  # the project's own, built once per tag by cluster/gke_setup.sh
            assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"Task {name}: {image} is not pinned by digest"


def test_service_accounts_use_workload_identity_and_no_secret_is_in_the_repository(rendered):
    accounts = of_kind(rendered, "ServiceAccount")
    for name in ("xray-pipeline", "xray-promote", "xray-api"):
        assert accounts[name]["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    assert not of_kind(rendered, "Secret")
    [listener] = of_kind(rendered, "EventListener").values()
    assert listener["spec"]["serviceAccountName"] == "xray-triggers"
    for template in of_kind(rendered, "TriggerTemplate").values():
        assert template["spec"]["resourcetemplates"][0]["spec"]["taskRunTemplate"]["serviceAccountName"] == "xray-pipeline"


def test_rbac_grants_no_more_than_each_identity_needs(rendered):
    def grants(role):
        return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
                for resource in rule["resources"] for verb in rule["verbs"]}
    roles = of_kind(rendered, "Role")
    assert grants(roles["xray-pipeline"]) == {("tekton.dev", "pipelineruns", v) for v in ("get", "list", "patch")}
    triggers = grants(roles["xray-triggers"]) | grants(of_kind(rendered, "ClusterRole")["xray-mlops-triggers"])
    assert not {g for g in triggers if g[1] in ("secrets", "taskruns") or g[2] in ("delete", "update", "impersonate", "*")}
    assert {g for g in triggers if g[2] in ("create", "patch")} == {
        ("tekton.dev", "pipelineruns", "create"), ("", "events", "create"), ("", "events", "patch")}
    promote = roles["xray-promote"]
    patchable = [rule for rule in promote["rules"] if "patch" in rule["verbs"]]
    assert patchable == [  # only what cluster/deploy_gke.py patches: the API and the monitoring CronJob
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [DEPLOYMENT], "verbs": ["patch"]},
        {"apiGroups": ["batch"], "resources": ["cronjobs"], "resourceNames": [MONITOR_CRONJOB], "verbs": ["patch"]}]
    for binding in of_kind(rendered, "RoleBinding").values():
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": binding["roleRef"]["name"], "namespace": "xray-mlops"}]


def test_the_api_deployment_probes_limits_and_runs_as_non_root(rendered):
    deployment = of_kind(rendered, "Deployment")["xray-api"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    service, hpa = of_kind(rendered, "Service")["xray-api"], of_kind(rendered, "HorizontalPodAutoscaler")["xray-api"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "xray-api"}


def test_files_are_named_after_the_objects_they_hold():
    for folder in ("tasks", "pipelines", "triggers", "deploy", "rbac"):
        for path in sorted((TEKTON / folder).glob("*.yaml")):
            names = {doc["metadata"]["name"] for doc in yaml.safe_load_all(path.read_text()) if doc}
            assert path.stem in names, f"{path.relative_to(REPO_ROOT)} holds {sorted(names)}"


def test_every_manifest_file_is_in_the_kustomization():
    kustomization = yaml.safe_load((TEKTON / "kustomization.yaml").read_text())
    listed = Counter(kustomization["resources"])
    on_disk = {str(p.relative_to(TEKTON)) for folder in ("tasks", "pipelines", "triggers", "deploy", "rbac")
               for p in (TEKTON / folder).glob("*.yaml")} | {"namespace.yaml"}
    assert set(listed) == on_disk and max(listed.values()) == 1


@needs_kubectl
def test_the_chains_component_adds_only_the_chains_configuration(tmp_path):
    base = os.path.relpath(TEKTON, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [base], "components": [f"{base}/components/chains"]}))
    docs = kustomize(tmp_path)
    base_docs = kustomize(TEKTON)
    added = [doc for doc in docs if doc not in base_docs]
    assert sorted((d["kind"], d["metadata"]["name"], d["metadata"]["namespace"]) for d in added) == [
        ("ConfigMap", "chains-config", "tekton-chains"), ("ServiceAccount", "tekton-chains-controller", "tekton-chains")]
    config = of_kind(added, "ConfigMap")["chains-config"]["data"]
    env = of_kind(base_docs, "ConfigMap")["xray-mlops-config"]["data"]
    assert config["signers.kms.kmsref"] == env["CHAINS_KMS_KEY"].strip()
    assert config["artifacts.oci.signer"] == config["artifacts.taskrun.signer"] == "kms"
    account = of_kind(added, "ServiceAccount")["tekton-chains-controller"]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == env["CHAINS_GSA"]
    if VALIDATOR.exists():
        result = subprocess.run([sys.executable, str(VALIDATOR), "-"], input=yaml.safe_dump_all(docs),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name, account", [("promote", "xray-promote"), ("training", "xray-pipeline"),
                                           ("retraining", "xray-pipeline")])
def test_the_runs_started_by_hand_name_their_pipeline_with_its_params(rendered, name, account):
    run = yaml.safe_load((TEKTON / "runs" / f"{name}.yaml").read_text())
    pipeline = of_kind(rendered, "Pipeline")[run["spec"]["pipelineRef"]["name"]]
    assert declared(run["spec"]["params"]) == declared(pipeline["spec"]["params"])
    assert run["spec"]["taskRunTemplate"]["serviceAccountName"] == account
    assert run["spec"]["timeouts"]["pipeline"]
    assert declared(run["spec"].get("workspaces")) == declared(pipeline["spec"].get("workspaces"))


def test_the_training_run_started_by_hand_is_placed_like_a_triggered_one(rendered):
    run = yaml.safe_load((TEKTON / "runs" / "training.yaml").read_text())
    template = of_kind(rendered, "TriggerTemplate")["training"]["spec"]["resourcetemplates"][0]
    config = of_kind(rendered, "ConfigMap")["xray-mlops-config"]["data"]
    expected = yaml.safe_dump(template["spec"]["taskRunSpecs"]).replace(
        "$(tt.params.gpu-accelerator)", config["GPU_ACCELERATOR"])
    assert yaml.safe_dump(run["spec"]["taskRunSpecs"]) == expected
    assert run["spec"]["taskRunTemplate"] == template["spec"]["taskRunTemplate"]


def test_the_trainer_image_installs_the_gpu_build_of_the_pinned_tensorflow():
    pins = dict(line.split("==", 1) for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    dockerfile = (REPO_ROOT / "model" / "Dockerfile").read_text()
    [version] = re.findall(r"^ARG TENSORFLOW_VERSION=(\S+)$", dockerfile, flags=re.MULTILINE)
    assert version == pins["tensorflow-cpu"]
    assert "tensorflow[and-cuda]==${TENSORFLOW_VERSION}" in dockerfile
    assert "USE_SYSTEM_PYTHON=1" in dockerfile


def run_step_script(task: dict, tmp_path: Path, make_exit: int, outcome: str | None, version: str):
    """Run the Task's own step script with a `make` that ends like the real step would: it leaves
    the candidate version and, for an outcome it emailed, the outcome note, then exits."""
    run_dir, results, shim = tmp_path / "run", tmp_path / "results", tmp_path / "bin"
    for folder in (run_dir, results, shim):
        folder.mkdir(parents=True)
    note = (f"from notify.outcome import record_outcome; record_outcome({str(run_dir / 'outcome.json')!r}, "
            f"{outcome!r}, 'outbox/x.eml')")
    (shim / "make").write_text("#!/usr/bin/env bash\n"
                               f"printf '%s\\n' {version!r} > {str(run_dir / 'candidate-version')!r}\n"
                               + (f"{sys.executable} -c \"{note}\"\n" if outcome else "")
                               + f"exit {make_exit}\n")
    (shim / "make").chmod(0o755)
    (shim / "python").symlink_to(sys.executable)
    script = task["spec"]["steps"][0]["script"]
    for name in declared(task["spec"]["results"]):
        script = script.replace(f"$(results.{name}.path)", str(results / name))
    env = clean_env(RUN_DIR=str(run_dir), PATH=f"{shim}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    produced = {name: (results / name).read_text() for name in declared(task["spec"]["results"])
                if (results / name).exists()}
    return result.returncode, produced


@pytest.mark.parametrize("task_name", ["train", "retrain"])
def test_a_failure_the_step_emailed_is_a_result_and_a_crash_fails_the_task(rendered, tmp_path, task_name):
    task = of_kind(rendered, "Task")[task_name]
    assert run_step_script(task, tmp_path / "ok", 0, None, "v0007-x") == (
        0, {"model-version": "v0007-x", "reported-failure": ""})
    assert run_step_script(task, tmp_path / "told", 1, "poor-model", "") == (
        0, {"model-version": "", "reported-failure": "poor-model"})
    code, produced = run_step_script(task, tmp_path / "crash", 3, None, "")
    assert code == 3 and produced == {}


def runs(task: dict, values: dict[str, str]) -> bool:
    """Whether a pipeline task's when-expressions hold, with ``$(...)`` replaced from ``values``."""
    def resolve(text: str) -> str:
        return REFERENCE.sub(lambda m: values[m.group(1)], text)

    return all((resolve(w["input"]) in w["values"]) == (w["operator"] == "in") for w in task.get("when", []))


@pytest.mark.parametrize("pipeline,task", [("training", "train"), ("retraining", "retrain")])
def test_a_reported_failure_fails_the_run_without_a_second_email(rendered, pipeline, task):
    spec = of_kind(rendered, "Pipeline")[pipeline]["spec"]
    tasks = {t["name"]: t for t in spec["tasks"] + spec["finally"]}
    told = {f"tasks.{task}.status": "Succeeded", f"tasks.{task}.results.model-version": "",
            f"tasks.{task}.results.reported-failure": "poor-model"}
    assert runs(tasks["reported-failure"], told)  # fails the run ...
    assert not runs(tasks["acceptance-test"], told)
    failed_run = {**told, "tasks.status": "Failed"}
    assert not runs(tasks["notify-failure"], failed_run)  # ... and nobody emails again
    assert not runs(tasks["notify"], failed_run)
    registered = {f"tasks.{task}.status": "Succeeded", f"tasks.{task}.results.model-version": "v0007-x",
                  f"tasks.{task}.results.reported-failure": ""}
    assert not runs(tasks["reported-failure"], registered) and runs(tasks["acceptance-test"], registered)
    # A crash: Tekton gives a failed task no results, so only what needs none can run.
    assert runs(tasks["notify-failure"], {f"tasks.{task}.status": "Failed", "tasks.status": "Failed"})


def without_descriptions(node):
    if isinstance(node, dict):
        return {key: without_descriptions(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [without_descriptions(value) for value in node]
    return node


def test_the_retraining_pipeline_is_the_training_pipeline_with_retrain_for_train(rendered):
    """Tekton cannot share a pipeline's body; this keeps the two copies from drifting apart."""
    pipelines = of_kind(rendered, "Pipeline")
    retraining = yaml.safe_dump(without_descriptions(pipelines["retraining"]))
    training = yaml.safe_dump(without_descriptions(pipelines["training"]))
    assert retraining.replace("retrain", "train") == training


@pytest.mark.parametrize("task_name,target", [("promote", "promote"), ("acceptance-test", "unittest"),
                                              ("notify", "notify")])
def test_a_version_parameter_reaches_make_as_data_never_as_make_code(rendered, tmp_path, task_name, target):
    """GNU make expands $(...) in a variable given on its command line (`make promote VERSION=...`),
    so a PipelineRun's parameter '$(shell ...)' would run there; from the environment it stays text.
    The Task's own script runs with the real make against a Makefile that exports VERSION as ours does."""
    (tmp_path / "Makefile").write_text(f"export VERSION\n{target}:\n\t@printf '%s\\n' \"$$VERSION\"\n")
    planted = tmp_path / "planted"
    version = f"$(shell touch {planted})v0001-x"
    script = of_kind(rendered, "Task")[task_name]["spec"]["steps"][-1]["script"]
    env = clean_env(MODEL_VERSION=version)
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert not planted.exists(), f"{task_name}: the parameter ran as make code"
    assert result.returncode == 0 and result.stdout.strip() == version, result.stderr
