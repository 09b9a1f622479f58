"""The Ray dashboard behind JupyterHub's auth: ``/user/<name>/ray-dashboard/``.

A ``jupyter_serverproxy_servers`` entry point (name ``ray-dashboard``, see
pyproject.toml) for jupyter-server-proxy in the notebook server:

- jupyter-server-proxy authenticates every request with the single-user
  server's own auth (JupyterHub OAuth in a hub; the token standalone), so only
  the server's owner reaches the dashboard. No Route/Ingress is needed;
- it replaces the request's ``Authorization`` header (which would otherwise
  carry the user's JupyterHub token to the dashboard) with
  ``Bearer $RAY_AUTH_TOKEN``, so the Ray dashboard's token auth passes
  (``request_headers_override``, supported by jupyter-server-proxy >= 4.1);
- jupyter-server-proxy only proxies to a port on localhost, while the dashboard
  lives at ``$RAY_DASHBOARD_URL`` (the head Service on Kubernetes). So the
  "server process" it supervises is a small TCP relay (``python -m
  rayspawner.dashboard_proxy --port N --target host:port``) from
  ``127.0.0.1:N`` to the dashboard. It is transparent (HTTP and WebSockets)
  and holds no secret: the header is added before the relay;
- it keeps Ray's dashboard login out of the browser. Ray's ``/api/authenticate``
  answers with ``Set-Cookie: ray-authentication-token=<the cluster's token>;
  Path=/``, which a browser would send with every request to the hub's origin,
  other users' ``/user/<name>/`` servers included. Behind this proxy every
  request already carries the token, so the relay refuses that path (403) and
  drops that cookie from any response; it also makes each connection carry one
  request (``Connection: close``), so that no second request on it passes
  unchecked.

Without ``RAY_DASHBOARD_URL`` (a server without a Ray cluster) the launcher
entry is hidden and the path answers 503 with an explanation.

This module needs only the standard library: the notebook image installs
rayspawner with ``--no-deps`` for it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger("rayspawner.dashboard_proxy")

NAME = "ray-dashboard"
TITLE = "Ray Dashboard"
CONNECT_TIMEOUT = 10.0
#: how long jupyter-server-proxy waits for the relay to answer its first request
START_TIMEOUT = 30.0


def parse_target(url: str) -> tuple[str, int]:
    """``http://host:port`` (or ``host:port``) -> (host, port). Only plain HTTP: the
    relay is transparent, and jupyter-server-proxy speaks HTTP to it."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"RAY_DASHBOARD_URL must be an http:// URL, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError(f"RAY_DASHBOARD_URL {url!r} has no host")
    return parts.hostname, parts.port or 80


def _escape_template(value: str) -> str:
    # jupyter-server-proxy renders header values with str.format({port}, {base_url}, ...)
    return value.replace("{", "{{").replace("}", "}}")


def setup_ray_dashboard() -> dict[str, Any]:
    """The jupyter-server-proxy ServerProcess configuration (entry point ``ray-dashboard``)."""
    url = os.environ.get("RAY_DASHBOARD_URL", "")
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    target = ""
    if url:
        try:
            host, port = parse_target(url)
            target = f"{host}:{port}"
        except ValueError as e:
            log.error("Ray dashboard proxy disabled: %s", e)
    command = [sys.executable, "-m", "rayspawner.dashboard_proxy", "--port", "{port}"]
    if target:
        command += ["--target", target]
    headers = {"Authorization": _escape_template(f"Bearer {token}")} if token else {}
    launcher: dict[str, Any] = {"enabled": bool(target), "title": TITLE, "path_info": f"{NAME}/"}
    return {
        "command": command,
        "timeout": START_TIMEOUT,
        "absolute_url": False,
        "request_headers_override": headers,
        "launcher_entry": launcher,
        "new_browser_tab": True,
    }


# ------------------------------------------------------------------ the relay
def _http_error(status: int, reason: str, text: str) -> bytes:
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass


#: Ray's dashboard login and the cookie it sets (ray/_private/authentication/authentication_constants.py)
AUTH_PATH = "/api/authenticate"
AUTH_COOKIE = b"ray-authentication-token"


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """An HTTP message head, up to and including the blank line (or what came before EOF).
    Longer than the reader's limit (64 KiB): ValueError."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        return e.partial
    except asyncio.LimitOverrunError:
        raise ValueError("HTTP head too long") from None


def request_path(head: bytes) -> str:
    """The request's path, decoded and normalized as a router would match it."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    path = unquote(urlsplit(parts[1]).path) if len(parts) >= 2 else ""
    return re.sub("/+", "/", path).rstrip("/").lower()


def _header_name(line: bytes) -> bytes:
    name, sep, _ = line.partition(b":")
    return name.strip().lower() if sep else b""


def one_request(head: bytes) -> bytes:
    """The request head with ``Connection: close`` (a WebSocket upgrade keeps its own) and
    without the browser's cookies (the hub's session cookie is none of the dashboard's business;
    the token header authenticates)."""
    lines = [line for line in head.split(b"\r\n") if _header_name(line) != b"cookie"]
    if any(_header_name(line) == b"upgrade" for line in lines):
        return b"\r\n".join(lines)
    kept = [line for line in lines if _header_name(line) not in (b"connection", b"keep-alive")]
    return b"\r\n".join([kept[0], b"Connection: close", *kept[1:]])


def without_auth_cookie(head: bytes) -> bytes:
    """The response head without any ``Set-Cookie: ray-authentication-token=...``."""

    def is_auth_cookie(line: bytes) -> bool:
        value = line.partition(b":")[2].strip().lower()
        return _header_name(line) == b"set-cookie" and value.startswith(AUTH_COOKIE + b"=")

    return b"\r\n".join(line for line in head.split(b"\r\n") if not is_auth_cookie(line))


async def _pipe_response(up_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    """The upstream's response with its head(s) filtered (interim 1xx heads too), then as it comes."""
    while True:
        head = await _read_head(up_r)
        client_w.write(without_auth_cookie(head))
        status = head[9:12]
        if not (status[:1] == b"1" and status != b"101" and head.endswith(b"\r\n\r\n")):
            break
    await client_w.drain()
    await _pipe(up_r, client_w)


async def _relay(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: tuple[str, int] | None
) -> None:
    try:
        try:
            head = await _read_head(client_r)
        except ValueError:
            client_w.write(_http_error(431, "Request Header Fields Too Large", "Request head too long."))
            await client_w.drain()
            return
        if request_path(head) == AUTH_PATH:
            client_w.write(
                _http_error(
                    403,
                    "Forbidden",
                    "Ray's dashboard login is not needed here (your server adds the cluster's "
                    "token to every request) and is refused: its cookie would reach other "
                    "users' servers on this site.",
                )
            )
            await client_w.drain()
            return
        if target is None:
            client_w.write(
                _http_error(
                    503,
                    "Service Unavailable",
                    "This server has no Ray cluster (RAY_DASHBOARD_URL is not set). "
                    "Start your server with a Ray profile to get a Ray dashboard.",
                )
            )
            await client_w.drain()
            return
        host, port = target
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            log.warning("Ray dashboard %s:%d not reachable: %s", host, port, e)
            client_w.write(
                _http_error(
                    502,
                    "Bad Gateway",
                    f"The Ray dashboard at {host}:{port} is not reachable ({type(e).__name__}). "
                    "Is the Ray head running? Check the server's spawn progress or restart it.",
                )
            )
            await client_w.drain()
            return
        try:
            up_w.write(one_request(head))
            await asyncio.gather(_pipe(client_r, up_w), _pipe_response(up_r, client_w))
        finally:
            up_w.close()
    except (ConnectionError, OSError, ValueError) as e:
        log.debug("relay connection ended: %s", e)
    finally:
        client_w.close()


async def serve(port: int, target: tuple[str, int] | None, host: str = "127.0.0.1") -> None:
    server = await asyncio.start_server(lambda r, w: _relay(r, w, target), host, port)
    log.info("Ray dashboard relay on %s:%d -> %s", host, port, f"{target[0]}:{target[1]}" if target else "(none)")
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rayspawner.dashboard_proxy",
        description="TCP relay from 127.0.0.1:PORT to the Ray dashboard (used by jupyter-server-proxy)",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", help="host:port of the Ray dashboard; none: answer 503")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[rayspawner.dashboard_proxy] %(message)s")
    target = parse_target(args.target) if args.target else None
    try:
        asyncio.run(serve(args.port, target))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
