"""The node's kubelet port: what the API server proxies ``pods/log`` and ``pods/exec`` to.

The port itself is served by ``kubelet-streams`` (Go, ``testcluster/gostreams``): HTTPS that
only the API server's client certificate may call, and ``/exec`` over SPDY and websockets with
the kubelet's own streaming code, so ``kubectl exec`` (SPDY, through the API server's stream
translator) and websocket clients (``kubernetes_asyncio``, ``testcluster.execclient``) both
work. It proxies everything else to this agent's plain-HTTP unix socket (root's only, in the
node's directory), and asks it which argv runs an exec (``POST /internal/exec``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .agent import NodeAgent

log = logging.getLogger(__name__)


class KubeletServer:
    """The agent's side of the kubelet port, and the kubelet-streams process in front of it."""

    def __init__(self, agent: NodeAgent, port: int, tls: tuple[Path, Path, Path], streams_bin: Path, socket: Path):
        self.agent, self.port, self.tls, self.streams_bin, self.socket = agent, port, tls, streams_bin, socket
        self._runner: web.AppRunner | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
        app.router.add_post("/internal/exec", self._exec_plan)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.socket.unlink(missing_ok=True)
        await web.UnixSite(self._runner, str(self.socket)).start()
        os.chmod(self.socket, 0o600)
        cert, key, ca = self.tls
        argv = [str(self.streams_bin), f"--listen={self.agent.address}:{self.port}", f"--tls-cert={cert}"]
        argv += [f"--tls-key={key}", f"--client-ca={ca}", f"--backend={self.socket}"]
        log_path = self.socket.with_name(f"kubelet-streams-{self.agent.name}.log")
        with open(log_path, "ab") as logf:
            self._proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        await self._wait_listening(ca)

    async def _wait_listening(self, ca: Path, timeout: float = 30.0) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False  # the handshake fails without a client certificate anyway
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection(self.agent.address, self.port)
                writer.close()
                return
            except OSError:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError(f"kubelet-streams exited with {self._proc.returncode}") from None
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            await asyncio.to_thread(self._proc.wait)
        if self._runner is not None:
            await self._runner.cleanup()
        self.socket.unlink(missing_ok=True)

    async def _exec_plan(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        plan = getattr(self.agent.runtime, "exec_plan", None)
        if plan is None:
            return web.Response(status=400, text="this node's pod runtime (sim) runs no processes: no exec")
        try:
            argv, env, cwd = plan(body["namespace"], body["pod"], body["command"], body["container"] or None)
        except LookupError as e:
            return web.Response(status=404, text=str(e))
        return web.json_response({"argv": argv, "env": [f"{k}={v}" for k, v in env.items()], "cwd": cwd})

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        previous = request.query.get("previous") == "true"
        text = self.agent.read_logs(ns, name, container, previous)
        if text is None:
            return web.Response(status=404, text=f'pod "{name}" not found on node {self.agent.name}')
        tail = request.query.get("tailLines")
        if tail:
            text = "".join(text.splitlines(keepends=True)[-int(tail) :])
        return web.Response(text=text)
