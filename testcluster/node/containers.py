"""Containers of the process kubelet: runtime state, quantities and ``$(VAR)`` expansion."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path
from typing import Any

_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "m": 1e-3,
}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_quantity(q: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "2", "1Gi") as a number."""
    m = re.fullmatch(r"([0-9.eE+-]+?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?", str(q).strip())
    if not m:
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * _SUFFIX.get(m.group(2) or "", 1)


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (``$$`` escapes; unknown references stay as they are)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        s,
    )


class ConfigError(Exception):
    """CreateContainerConfigError: a referenced Secret/ConfigMap/key is missing."""


class Container:
    """Runtime state of one container."""

    def __init__(self, spec: dict[str, Any], pod_dir: Path, init: bool = False) -> None:
        self.spec, self.name = spec, spec["name"]
        # A native sidecar (Kubernetes >= 1.29): an init container with restartPolicy Always.
        self.sidecar = init and spec.get("restartPolicy") == "Always"
        self.proc: asyncio.subprocess.Process | None = None
        self.restart_count = 0
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.ready = self.started = False
        self.container_id = ""
        self.env: dict[str, str] = {}
        self.log_path = pod_dir / "logs" / f"{self.name}.log"
        self.term_path = pod_dir / "termination" / self.name
        self.probe_tasks: list[asyncio.Task[None]] = []

    def status(self) -> dict[str, Any]:
        image = self.spec.get("image", "testcluster.rayspawner.test/none")
        return {
            "name": self.name,
            "image": image,
            "imageID": f"k8semu://{image}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
            **({"containerID": self.container_id} if self.container_id else {}),
        }
