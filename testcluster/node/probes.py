"""Probes of process-kubelet containers: startup, readiness and liveness loops; exec in the
pod sandbox, httpGet, tcpSocket. A mixin of :class:`kubelet_process.PodRunner`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .containers import Container
from .netns import http_probe, tcp_probe

if TYPE_CHECKING:
    from .kubelet_process import ProcessKubelet
    from .netns import PodNet

log = logging.getLogger(__name__)


class Probes:
    """Runs a container's probes; failures restart (liveness/startup) or unready it."""

    k: ProcessKubelet
    net: PodNet | None

    if TYPE_CHECKING:  # provided by PodRunner

        async def push(self) -> None: ...
        async def event(self, reason: str, message: str, type_: str = "Normal") -> None: ...
        async def kill_tree(self, c: Container, grace: float) -> None: ...
        def grace(self) -> float: ...
        async def exec(self, c: Container, argv: list[str], timeout: float) -> tuple[int, str]: ...

    async def probe_loop(self, c: Container, kind: str, spec: dict[str, Any]) -> None:
        scale = self.k.time_scale
        period = max(0.1, spec.get("periodSeconds", 10) * scale)
        threshold = spec.get("failureThreshold", 3)
        timeout = max(spec.get("timeoutSeconds", 1), self.k.min_probe_timeout)
        label = {"startupProbe": "Startup", "readinessProbe": "Readiness", "livenessProbe": "Liveness"}[kind]
        if kind != "startupProbe":
            while not c.started:
                await asyncio.sleep(0.05)
        await asyncio.sleep(spec.get("initialDelaySeconds", 0) * scale)
        fails = successes = 0
        while True:
            ok, msg = await self.probe(c, spec, timeout)
            if ok:
                fails, successes = 0, successes + 1
                if kind == "startupProbe":
                    c.started = True
                    c.ready = "readinessProbe" not in c.spec
                    await self.push()
                    return
                if kind == "readinessProbe" and not c.ready and successes >= spec.get("successThreshold", 1):
                    c.ready = True
                    await self.push()
            else:
                fails, successes = fails + 1, 0
                if fails == 1 or fails % threshold == 0:
                    await self.event("Unhealthy", f"{label} probe failed: {msg}".strip(), "Warning")
                if fails >= threshold:
                    if kind == "readinessProbe" and c.ready:
                        c.ready = False
                        await self.push()
                    elif kind != "readinessProbe":
                        await self.event(
                            "Killing", f"Container {c.name} failed {label.lower()} probe, will be restarted"
                        )
                        await self.kill_tree(c, self.grace())
                        return
            await asyncio.sleep(period)

    async def probe(self, c: Container, spec: dict[str, Any], timeout: float) -> tuple[bool, str]:
        assert self.net is not None
        try:
            if "exec" in spec:
                rc, out = await self.exec(c, spec["exec"].get("command", []), timeout)
                return rc == 0, out.strip()[-500:]
            if "httpGet" in spec or "tcpSocket" in spec:
                h = spec.get("httpGet") or spec["tcpSocket"]
                port = h.get("port")
                if isinstance(port, str) and not port.isdigit():
                    port = next((p["containerPort"] for p in c.spec.get("ports", []) if p.get("name") == port), 0)
                host = h.get("host") or self.net.ip
                if "tcpSocket" in spec:
                    return await tcp_probe(host, int(port), timeout)
                return await http_probe(
                    host,
                    int(port),
                    h.get("path", "/"),
                    h.get("httpHeaders", []),
                    h.get("scheme", "HTTP").upper() == "HTTPS",
                    timeout,
                )
            log.warning("probe %s not supported, treated as success", list(spec))
            return True, ""
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            return False, f"{type(e).__name__}: {e}"
