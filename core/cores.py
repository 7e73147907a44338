"""The CPU cores this process may use, for sizing thread pools (TensorFlow's, onnxruntime's).

Thread pools size themselves by the CPUs the process may be scheduled on, which in a container is
the host's count; with a CPU limit (a cgroup quota) that many threads are throttled, and a thread
that is throttled stalls the others of its operation. :func:`available_cores` is the CPU affinity,
capped by the cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), rounded down, at least 1.
Standard library only: the API imports it without TensorFlow.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller -> path of this process's cgroup, from ``/proc/self/cgroup`` ("" for v2)."""
    paths = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ancestors(relative: str | None) -> list[str]:
    """``/a/b`` -> ``["a/b", "a", ""]``: a quota on any enclosing cgroup applies too."""
    parts = [p for p in (relative or "").split("/") if p]
    return ["/".join(parts[:n]) for n in range(len(parts), -1, -1)]


def _quota(text: str | None, period_text: str | None = None) -> float | None:
    """Cores of a v2 ``cpu.max`` ("150000 100000", "max 100000") or a v1 quota and period."""
    try:
        if period_text is None:
            quota, _, period_text = (text or "").partition(" ")
        else:
            quota = text or ""
        if quota in ("", "max") or int(quota) <= 0:
            return None
        return int(quota) / int(period_text)
    except (ValueError, ZeroDivisionError):
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process in cores (1.5 for ``150000 100000``); None when unlimited.

    The smallest quota of its cgroup and every enclosing one, in v2 (``cpu.max``) and v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``). A container's cgroup namespace shows its own
    cgroup as the root, which is therefore read too.
    """
    cgroups = _cgroup_paths(proc_cgroup)
    limits = [_quota(_read(root / relative / "cpu.max")) for relative in _ancestors(cgroups.get(""))]
    for folder in ("cpu", "cpu,cpuacct"):
        for relative in _ancestors(cgroups.get("cpu")):
            v1 = root / folder / relative
            limits.append(_quota(_read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")))
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def available_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup quota (rounded down)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cores = min(cores, math.floor(limit))
    return max(1, cores)
