"""Run a Tekton step's own script as its container would, without a container engine.

The environment comes from the manifests only: the image's Dockerfile (ENV, WORKDIR, USER of its
last stage), the ConfigMap the step's envFrom names, the Task's stepTemplate and the step's env.
The step runs as its user in a private mount namespace, chrooted into a root of its own: the host's
system folders (read-only for that user, as an image's are), /app made of the Dockerfile's COPY
instructions and owned by root, each mounted volume as a fresh writable folder, and the root itself read-only where the
step sets readOnlyRootFilesystem. The image's python is the test venv's, put at /usr/local/bin as
python:3.11-slim has it. Needs root (unshare, mount, chroot), which the tests have.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from helpers import REPO_ROOT

# The host folders the chroot shows; /tmp, /var, /home and /root are the image's own (empty).
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib64", "usr", "etc", "dev", "proc", "sys")
VENV_PYTHON = Path(sys.executable)
ERROR_TRACES = ("Permission denied", "Read-only file system", "PermissionError")


@dataclass
class Image:
    """What a Dockerfile's last stage gives a container at run time."""

    env: dict[str, str]
    workdir: str
    user: str


def read_dockerfile(text: str) -> Image:
    """ENV, WORKDIR and USER of the last stage (``ENV k=v`` form, line continuations joined)."""
    joined = re.sub(r"\\\n", " ", text)
    stage = re.split(r"^FROM\s", joined, flags=re.MULTILINE)[-1]
    env, workdir, user = {}, "/", "0"
    for line in stage.splitlines():
        words = line.strip().split(None, 1)
        if len(words) < 2:
            continue
        instruction, rest = words[0].upper(), words[1]
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
        elif instruction == "WORKDIR":
            workdir = rest.strip() if rest.strip().startswith("/") else f"{workdir.rstrip('/')}/{rest.strip()}"
        elif instruction == "USER":
            user = rest.strip()
    return Image(env, workdir, user)


@dataclass
class Step:
    """A Task step merged with its stepTemplate, its variables resolved."""

    task: str
    name: str
    script: str
    env: dict[str, str]
    workdir: str
    uid: int
    read_only_root: bool
    mounts: list[str]
    results: list[str] = field(default_factory=list)


def resolve_step(task: dict, step: dict, image: Image, config: dict[str, str], params: dict[str, str],
                 namespace: str = "xray-mlops", labels: dict[str, str] | None = None) -> Step:
    """The step as the kubelet runs it: env in Kubernetes' order (envFrom, then env; the step's
    entries override the stepTemplate's), ``$(params.x)`` replaced by ``params``, ``$(results.x.path)``
    by Tekton's /tekton/results/x, the pod's namespace and ``labels`` (Tekton's) where fieldRef asks.
    Optional secrets that are absent are left out, as Kubernetes does."""
    spec = task["spec"]
    template = spec.get("stepTemplate", {})

    def variables(text: str) -> str:
        text = re.sub(r"\$\(params\.([\w-]+)\)", lambda m: params[m.group(1)], text)
        return re.sub(r"\$\(results\.([\w-]+)\.path\)", r"/tekton/results/\1", text)

    env = dict(image.env)
    for source in (template, step):
        for ref in source.get("envFrom", []):
            assert set(ref) == {"configMapRef"}, f"{task['metadata']['name']}: only envFrom configMapRef is modelled"
            env.update(config)
    for source in (template, step):
        for entry in source.get("env", []):
            if "value" in entry:
                env[entry["name"]] = variables(entry["value"])
                continue
            ref = entry["valueFrom"]
            if "configMapKeyRef" in ref:
                env[entry["name"]] = config[ref["configMapKeyRef"]["key"]]
            elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[entry["name"]] = namespace
            elif label := re.fullmatch(r"metadata\.labels\['([^']+)'\]", ref.get("fieldRef", {}).get("fieldPath", "")):
                env[entry["name"]] = (labels or {})[label.group(1)]
            elif ref.get("secretKeyRef", {}).get("optional"):
                env.pop(entry["name"], None)
            else:
                raise AssertionError(f"{task['metadata']['name']}: env {entry['name']} comes from {ref}, not modelled")
    security = {**template.get("securityContext", {}), **step.get("securityContext", {})}
    uid = int(security.get("runAsUser", image.user))
    mounts = [m["mountPath"] for m in template.get("volumeMounts", []) + step.get("volumeMounts", [])]
    return Step(task["metadata"]["name"], step["name"], variables(step["script"]), env,
                step.get("workingDir") or template.get("workingDir") or image.workdir, uid,
                bool(security.get("readOnlyRootFilesystem")), mounts,
                [r["name"] for r in spec.get("results", [])])


def tracked_files() -> list[str]:
    """The repository's files as a clean clone (the build context) has them."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True,
                            timeout=60).stdout.decode().split("\0")
    return [name for name in listed if name and (REPO_ROOT / name).is_file()]


def copy_image_files(dockerfile: str, target: Path) -> None:
    """Build the image's WORKDIR from the COPY instructions of its last stage (``--from`` ones
    are another stage's binaries, not the repository's), then give it to root, not writable by
    others, as the image has it."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    stage = re.split(r"^FROM\s", joined, flags=re.MULTILINE)[-1]
    files, workdir = tracked_files(), "/"
    for line in stage.splitlines():
        words = line.split()
        if words[:1] == ["WORKDIR"]:
            workdir = words[1]
        if words[:1] != ["COPY"] or any(word.startswith("--from") for word in words):
            continue
        *sources, dest = [word for word in words[1:] if not word.startswith("--")]
        assert workdir == "/app", f"only COPY into WORKDIR /app is modelled, not {workdir}"
        if dest.startswith("/"):
            continue  # a build-time file outside the application (removed by a later RUN)
        for source in sources:
            source = source.rstrip("/")
            chosen = files if source == "." else [f for f in files if f == source or f.startswith(source + "/")]
            assert chosen, f"COPY {source}: no such file in the repository"
            for name in chosen:
                if source == ".":
                    relative = name
                elif name == source:
                    relative = str(Path(dest) / Path(name).name) if dest.endswith("/") or len(sources) > 1 else dest
                else:
                    relative = str(Path(dest) / Path(name).relative_to(source))
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / name, target / relative)
    subprocess.run(["chown", "-R", "0:0", str(target)], check=True, timeout=60)
    subprocess.run(["chmod", "-R", "u+rwX,go+rX,go-w", str(target)], check=True, timeout=60)


@dataclass
class StepRun:
    returncode: int
    output: str
    volumes: dict[str, Path]
    results: dict[str, str]


def run_step(step: Step, app: Path, work: Path, extra_env: dict[str, str], timeout: float = 300) -> StepRun:
    """Run ``step.script`` as ``step.uid`` in a chroot built under ``work`` (see the module docstring).

    ``app`` is the root-owned copy of the repository; ``extra_env`` holds what the cluster gives a
    pod besides the manifests (here: STORAGE_EMULATOR_HOST, the fake GCS that stands for Workload
    Identity's GCS)."""
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    root, volumes = work / "root", {}
    bin_dir, scripts, results = work / "image-bin", work / "scripts", work / "results"
    for folder in (root, bin_dir, scripts, results):
        folder.mkdir()
    for mount in step.mounts:
        volumes[mount] = Path(tempfile.mkdtemp(prefix="volume-", dir=work))
        volumes[mount].chmod(0o777)  # an emptyDir is world-writable
    results.chmod(0o777)
    for name in ("python", "python3"):
        (bin_dir / name).write_text(f"#!/bin/sh\nexec {VENV_PYTHON} \"$@\"\n")
        (bin_dir / name).chmod(0o755)
    kubectl = shutil.which("kubectl")
    if kubectl:
        (bin_dir / "kubectl").symlink_to(kubectl)
    (scripts / "step").write_text(step.script)
    (scripts / "step").chmod(0o755)
    binds = [(f"/{d}", d) for d in SYSTEM_DIRS if Path(f"/{d}").is_dir() and not Path(f"/{d}").is_symlink()]
    # The venv's python and its base installation, wherever they live on this machine.
    for path in {str(VENV_PYTHON.parent.parent), str(Path(VENV_PYTHON.resolve()).parent.parent)}:
        binds.append((path, path.lstrip("/")))
    binds += [(str(app), "app"), (str(bin_dir), "usr/local/bin"), (str(scripts), "tekton/scripts"),
              (str(results), "tekton/results")]
    binds += [(str(source), mount.lstrip("/")) for mount, source in volumes.items()]
    lines = ["set -eu", f"R={shlex.quote(str(root))}", 'mount -t tmpfs -o mode=755 tmpfs "$R"']
    for d in SYSTEM_DIRS:
        if Path(f"/{d}").is_symlink():
            lines.append(f'ln -s {shlex.quote(str(Path(f"/{d}").readlink()))} "$R/{d}"')
    lines.append('mkdir -p "$R/tmp" "$R/var/tmp" "$R/home" "$R/root" && chmod 1777 "$R/tmp" "$R/var/tmp"')
    for source, target in binds:
        lines.append(f'mkdir -p "$R/{target}" && mount --rbind {shlex.quote(source)} "$R/{target}"')
    if step.read_only_root:
        lines.append('mount -o remount,ro "$R"')
    environment = " ".join(shlex.quote(f"{k}={v}") for k, v in {**step.env, **extra_env}.items())
    inner = f"cd {shlex.quote(step.workdir)} && exec /tekton/scripts/step"
    lines.append(f'exec chroot "$R" /usr/bin/setpriv --reuid={step.uid} --regid={step.uid} --clear-groups '
                 f"/usr/bin/env -i {environment} /bin/sh -c {shlex.quote(inner)}")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", "\n".join(lines)],
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                            check=False)
    produced = {p.name: p.read_text() for p in results.iterdir()}
    return StepRun(result.returncode, result.stdout + result.stderr, volumes, produced)
