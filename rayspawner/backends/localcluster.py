"""One local Ray cluster as the hub process knows it: its nodes (ports, pids, temp dirs) and
what the spawner keeps of it in the hub's state (never the token)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..env import local_notebook_env
from .localproc import _FIXED

log = logging.getLogger(__name__)


@dataclass
class LocalNode:
    role: str  # "head" or "<group>-<i>"
    base_port: int
    num_cpus: int
    num_gpus: int = 0
    object_store_bytes: int = 0
    pid: int = 0
    #: Ray's ``--memory`` (task heap): the profile's memory minus the object store
    memory_bytes: int = 0
    #: the node's own ``--temp-dir`` (own session dir, so own socket names)
    temp_dir: str = ""
    restarts: int = 0

    def port(self, name: str) -> int:
        return self.base_port + _FIXED[name]

    @property
    def ports(self) -> list[int]:
        """Every port the node listens on by our choice (fixed services)."""
        return [self.base_port + off for off in _FIXED.values()]


_NODE_FIELDS = {f.name for f in fields(LocalNode)}


@dataclass
class LocalCluster:
    """One cluster's processes and ports. ``to_state`` never contains the token."""

    name: str
    cid: str
    temp_dir: str
    temp_root: str
    nodes: list[LocalNode]
    token: str | None = field(default=None, repr=False)
    #: the kernel is a direct driver (RAY_ADDRESS=host:gcs) rather than a Ray Client
    driver: bool = True
    head_ready: bool = False
    #: client mode: a warm-up Ray Client connection succeeded
    client_ok: bool = False
    failed: str | None = None
    started: float = 0.0
    ready_info: dict = field(default_factory=dict)
    #: role -> why the worker is given up on (restart limit reached)
    failed_nodes: dict[str, str] = field(default_factory=dict)
    #: things the user should see in the spawn progress (a worker restarted, ...)
    events: list[str] = field(default_factory=list)
    spawned_at: dict[str, float] = field(default_factory=dict, repr=False)
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict, repr=False)
    warmup: asyncio.Task | None = field(default=None, repr=False)
    #: the task starting the workers one by one, and the worker it is starting
    boot: asyncio.Task | None = field(default=None, repr=False)
    booting: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    #: the spec's extra env, for nodes restarted later
    extra_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def head(self) -> LocalNode:
        return self.nodes[0]

    @property
    def workers(self) -> list[LocalNode]:
        return self.nodes[1:]

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.head.port('gcs')}"

    def notebook_env(self) -> dict[str, str]:
        return local_notebook_env(
            self.name,
            "127.0.0.1",
            self.head.port("client"),
            self.head.port("dashboard"),
            self.token,
            driver=self.driver,
            gcs_port=self.head.port("gcs"),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cid": self.cid,
            "temp_dir": self.temp_dir,
            "temp_root": self.temp_root,
            "driver": self.driver,
            "nodes": [asdict(n) for n in self.nodes],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LocalCluster:
        nodes = [LocalNode(**{k: v for k, v in n.items() if k in _NODE_FIELDS}) for n in state["nodes"]]
        return cls(
            state["name"],
            state["cid"],
            state["temp_dir"],
            state["temp_root"],
            nodes,
            driver=bool(state.get("driver", False)),
            head_ready=True,
            client_ok=True,
        )

    def write_info(self, **owner: Any) -> None:
        """``cluster.json`` in the temp dir: what the orphan sweep needs to judge the cluster
        (its hub's pid, its notebook's pid once known). Never the token."""
        path = Path(self.temp_dir, "cluster.json")
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            info = {}
        info.update(self.to_state())
        info.update(owner)
        try:
            path.write_text(json.dumps(info, indent=1))
        except OSError as e:
            log.warning("Ray cluster %s: cannot write %s: %s", self.name, path, e)
