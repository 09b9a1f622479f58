"""The kubelet's ``/exec`` endpoint over websockets, where the API server sends ``pods/exec``.

``GET /exec/{namespace}/{pod}/{container}?command=..&command=..&input=1&output=1&error=1&tty=0``
(the API server's ``ExecLocation`` renames stdin/stdout/stderr to input/output/error), upgraded
to a websocket with subprotocol ``v4.channel.k8s.io`` (or ``v5``). A websocket ``pods/exec``
with ``v4`` (``kubernetes_asyncio``'s ``WsApiClient``) reaches the kubelet as it came: the API
server proxies the upgrade. ``kubectl exec`` (``v5``) is translated by the API server to SPDY,
which is not served here: it gets a 400 that says so.

Every message is binary: one channel byte, then data. Channels: 0 stdin, 1 stdout, 2 stderr,
3 the final Status (``{"metadata":{},"status":"Success"}``, or Failure with ``reason:
NonZeroExitCode`` and ``details.causes[{reason: ExitCode, message: "<n>"}]``), 4 resize
(ignored); v5's ``[255, <channel>]`` closes a stream (stdin EOF). After the Status the server
closes the websocket. A tty request gets no pty (stderr goes to stdout, as with a tty).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from .netns import terminate_tree

log = logging.getLogger("testcluster.node.exec")

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255

#: (namespace, pod, container, argv, stdin, stdout, stderr, tty) -> a started process
ExecStart = Callable[..., Awaitable[asyncio.subprocess.Process]]


def flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "t")


def exit_status(code: int, argv: list[str]) -> dict[str, Any]:
    """The channel-3 Status of a finished command, as the kubelet writes it."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: error executing command {argv}, exit code {code}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


async def serve_kubelet_exec(start: ExecStart | None, request: web.Request) -> web.StreamResponse:
    ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
    q = request.query
    argv = q.getall("command", [])
    if not argv:
        return web.Response(status=400, text="you must specify at least 1 command")
    if start is None:
        return web.Response(status=400, text="this node's pod runtime (sim) runs no processes: no exec")
    offered = [p.strip() for h in request.headers.getall("Sec-WebSocket-Protocol", []) for p in h.split(",")]
    if request.headers.get("Upgrade", "").lower() != "websocket" or not any(p in PROTOCOLS for p in offered):
        return web.Response(status=400, text=f"exec is served over websockets ({', '.join(PROTOCOLS)}) only, not SPDY")
    try:
        proc = await start(
            ns,
            pod,
            argv,
            container,
            flag(q.get("input")),
            flag(q.get("output")),
            flag(q.get("error")),
            flag(q.get("tty")),
        )
    except LookupError as e:
        return web.Response(status=404, text=str(e))
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    try:
        await ws.prepare(request)
        log.info("exec %s/%s -c %s %s (%s, pid %s)", ns, pod, container, argv, ws.ws_protocol, proc.pid)
        await stream(ws, proc, argv)
    finally:
        if proc.returncode is None:
            await terminate_tree(proc.pid, 0)
            await proc.wait()
    return ws


async def stream(ws: web.WebSocketResponse, proc: asyncio.subprocess.Process, argv: list[str]) -> None:
    """Pump the process's pipes to channels 1 and 2 and channel 0 to its stdin; then the Status."""

    async def pump(reader: asyncio.StreamReader | None, channel: int) -> None:
        while reader is not None and (chunk := await reader.read(65536)):
            await ws.send_bytes(bytes([channel]) + chunk)

    async def read_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(data)
                await proc.stdin.drain()
            elif channel == CLOSE and data[:1] == bytes([STDIN]) and proc.stdin is not None:
                proc.stdin.close()

    output = asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
    client = asyncio.ensure_future(read_client())
    try:
        await asyncio.wait({output, client}, return_when=asyncio.FIRST_COMPLETED)
        if not output.done():  # the client went away first
            log.info("exec client disconnected; stopping %s", argv)
            await terminate_tree(proc.pid, 0)
            output.cancel()
            return
        rc = await proc.wait()
        code = 128 - rc if rc < 0 else rc
        await ws.send_bytes(bytes([ERROR]) + json.dumps(exit_status(code, argv)).encode())
        await ws.close()
    except ConnectionError:
        log.info("exec connection lost: %s", argv)
    finally:
        client.cancel()
        output.cancel()
        await asyncio.gather(client, output, return_exceptions=True)
