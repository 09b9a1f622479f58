"""What belongs to the hub process rather than to one server, in one place.

Everything per server lives in its :class:`~rayspawner.session.RayClusterSession`. What is
truly process-wide is here, owned by :data:`hub_process`:

- ``sweepers``: RaySpawner's periodic orphan sweep, one per (event loop, namespace);
- ``local_backends``: LocalRaySpawner's backends, one per distinct local configuration
  (they hold the clusters of every local server and their sweep), and ``port_blocks``, the
  port locks this process holds;
- ``kuberay_served``/``kuberay_auth_problem``: what ``backends.detect`` learnt of the API
  server (is KubeRay there, can its token auth be wired);
- ``warned``: start-up warnings logged once per process.

Tests call :meth:`HubProcessState.reset` to start from a fresh "hub process".
Caches keyed by the objects they describe (the reflector indexes in ``reflector_index``
and ``backends.pods``, the request gates per event loop in ``backends.kube``) are not state
of this kind and stay beside their code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


@dataclass
class HubProcessState:
    sweepers: dict[tuple[int, str], asyncio.Task] = field(default_factory=dict)
    local_backends: dict[tuple, Any] = field(default_factory=dict)
    #: local port blocks, one per (lock dir, range): the locks this process holds
    port_blocks: dict[tuple, Any] = field(default_factory=dict)
    #: whether the API server serves RayClusters, and why KubeRay's token auth cannot be
    #: wired ("" if it can), per API server host (backends.detect)
    kuberay_served: dict[str, bool] = field(default_factory=dict)
    kuberay_auth_problem: dict[str, str] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)

    def warn_once(self, key: str) -> bool:
        """True the first time ``key`` is asked for in this process."""
        if key in self.warned:
            return False
        self.warned.add(key)
        return True

    def reset(self) -> None:
        """Forget everything, as a new hub process would (tests)."""
        for task in self.sweepers.values():
            task.cancel()
        self.sweepers.clear()
        for backend in self.local_backends.values():
            stop = getattr(backend, "stop_sweeper", None)
            if stop is not None:
                stop()
        self.local_backends.clear()
        self.port_blocks.clear()
        self.kuberay_served.clear()
        self.kuberay_auth_problem.clear()
        self.warned.clear()


hub_process = HubProcessState()
