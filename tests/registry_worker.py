"""A separate process that works on a registry, for the race and crash tests.

    python tests/registry_worker.py URI record VERSION N       record N passing test runs
    python tests/registry_worker.py URI register-and-hang      register, stop forever after one file
    python tests/registry_worker.py URI promote-and-hang VERSION   promote, stop forever mid-copy

The "hang" commands print ``HANGING`` once they are stuck mid-operation, so the test can kill them
there, as a crash or a lost machine would.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registry.store import Registry  # noqa: E402


def hang_after(storage, method: str, calls: int) -> None:
    """Let ``calls`` calls of ``storage.method`` through, then stop the process on the next one."""
    original, seen = getattr(storage, method), []

    def wrapped(*args, **kwargs):
        if len(seen) >= calls:
            print("HANGING", flush=True)
            while True:
                time.sleep(60)
        seen.append(args)
        return original(*args, **kwargs)

    setattr(storage, method, wrapped)


def main() -> None:
    uri, command, *rest = sys.argv[1:]
    registry = Registry(uri, lease_ttl_s=2.0)  # a crashed worker's lease expires soon
    if command == "record":
        version, count = rest[0], int(rest[1])
        for index in range(count):
            registry.record_test_run(version, {"suite_sha256": "s", "passed": 1, "failed": 0,
                                               "at": f"run-{index}", "by": f"worker-{sys.argv[-1]}",
                                               "api_agreement": 1.0, "api_max_probability_diff": 1e-7, "api_images": 24})
    elif command == "register-and-hang":
        version = registry.claim_version()
        print(version, flush=True)
        hang_after(registry.storage, "create", 1)  # model.onnx lands, the next file never does
        registry.register({"model.onnx": b"onnx" * 1000, "model.keras": b"keras" * 1000},
                          {"kind": "train"}, version=version)
    elif command == "promote-and-hang":
        hang_after(registry.storage, "copy", 1)  # one file copied to production, then nothing
        registry.promote(rest[0], by="crash-test")
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
