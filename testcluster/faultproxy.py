"""An HTTP fault proxy between a client under test (the hub) and the real API server.

It listens on plain HTTP on loopback and forwards every request, headers (the client's
bearer token) and body as they are, to the API server over TLS; responses, watch streams
included, are streamed back. Along the way it

- records each API request as ``(verb, resource, namespace, name)`` in ``request_log``,
  classified as the API server's request-info resolver does (``resource`` is the plural,
  or ``pods/status``-style for subresources; discovery is not logged);
- counts open watches (``open_watches.current`` / ``.peak``);
- injects faults from :class:`Faults`: an error status with the API server's own ``Status``
  body shape (429 with ``Retry-After``), added latency, or a watch cut mid-stream;
- hides whole API groups (``hidden_groups``): every path under ``/apis/<group>`` answers 404 and
  ``/apis`` leaves the group out, as an API server where that group's CRDs are not installed
  (KubeRay absent, on a control plane whose operator other tests share).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

log = logging.getLogger("testcluster.faultproxy")

_DEFAULT = object()
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


@dataclass(frozen=True)
class RequestInfo:
    verb: str
    resource: str
    namespace: str | None
    name: str | None
    group: str = ""  # the API group ("" for the core group)


def classify(method: str, path: str, query: dict[str, list[str]]) -> RequestInfo | None:
    """The API verb and resource of a request (as k8s.io/apiserver's RequestInfoFactory), or None."""
    parts = [p for p in path.split("/") if p]
    group = ""
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, parts = parts[1], parts[3:]
    else:
        return None
    if not parts:
        return None
    watch = False
    if parts[0] == "watch":
        watch, parts = True, parts[1:]
    namespace = None
    if len(parts) >= 2 and parts[0] == "namespaces" and len(parts) > 2:
        namespace, parts = parts[1], parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else None
    if len(parts) > 2:
        resource = f"{resource}/{parts[2]}"
    if resource == "namespaces" and name and namespace is None:
        namespace = name
    watch = watch or query.get("watch", [""])[0].lower() in ("true", "1", "t")  # strconv.ParseBool
    verb = {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method)
    if verb is None:
        verb = "watch" if watch else ("get" if name else "list")
    return RequestInfo(verb, resource, namespace, name, group)


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


@dataclass
class Fault:
    verb: str  # "get", "list", "watch", "create", "update", "patch", "delete", "deletecollection" or "*"
    resource: str  # plural ("pods"), "pods/status", or "*"
    status: int | None = 500
    count: int | None = 1  # None: until cleared
    retry_after: int | None = None
    latency: float | None = None
    drop_watch: bool = False
    name: str | None = None
    namespace: str | None = None
    skip: int = 0  # let this many matching requests through first (a fault at the n-th step)
    fired: int = 0
    seen: int = 0

    def matches(self, info: RequestInfo) -> bool:
        if self.count is not None and self.fired >= self.count:
            return False
        if not (
            self.verb in ("*", info.verb)
            and self.resource in ("*", info.resource)
            and self.name in (None, info.name)
            and self.namespace in (None, info.namespace)
        ):
            return False
        self.seen += 1
        return self.seen > self.skip

    def response(self, info: RequestInfo, user: str = "system:anonymous") -> web.Response | None:
        if self.status is None:
            return None
        plural, _, sub = info.resource.partition("/")
        details = {**({"name": info.name} if info.name else {}), "kind": plural}
        headers: dict[str, str] = {}
        if self.status == 429:
            ra = self.retry_after if self.retry_after is not None else 1
            body = status_body(429, "TooManyRequests", "Too many requests, please try again later.")
            body["details"] = {"retryAfterSeconds": ra}
            headers["Retry-After"] = str(ra)
        elif self.status == 403:  # as the API server's forbiddenMessage and NewForbidden write it
            where = f' in the namespace "{info.namespace}"' if info.namespace else " at the cluster scope"
            res = f"{plural}/{sub}" if sub else plural
            qualified = f"{plural}.{info.group}" if info.group else plural
            subject = f'{qualified} "{info.name}"' if info.name else qualified
            msg = (
                f'{subject} is forbidden: User "{user}" cannot {info.verb} resource "{res}" in API group '
                f'"{info.group}"{where} (injected)'
            )
            body = status_body(403, "Forbidden", msg, {**details, **({"group": info.group} if info.group else {})})
        elif self.status == 409:
            msg = (
                f'Operation cannot be fulfilled on {plural} "{info.name or ""}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            )
            body = status_body(409, "Conflict", msg, details)
        elif self.status == 404:
            body = status_body(404, "NotFound", f'{plural} "{info.name or ""}" not found', details)
        elif self.status == 503:
            body = status_body(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        else:
            body = status_body(self.status, "InternalError", "Internal error occurred: injected fault")
            if self.retry_after is not None:
                headers["Retry-After"] = str(self.retry_after)
        return web.json_response(body, status=self.status, headers=headers)


@dataclass
class Faults:
    """Thread-safe pending faults plus a record of those that fired (``injected``)."""

    _faults: list[Fault] = field(default_factory=list)
    injected: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        verb: str,
        resource: str,
        status: Any = _DEFAULT,
        count: int | None = 1,
        retry_after: int | None = None,
        latency: float | None = None,
        drop_watch: bool = False,
        name: str | None = None,
        namespace: str | None = None,
        skip: int = 0,
    ) -> Fault:
        """A fault for the next ``count`` matching requests (None: until cleared) after the first
        ``skip``. ``status`` defaults to 500, or to None (no error) when only ``latency`` or
        ``drop_watch`` is given."""
        if status is _DEFAULT:
            status = None if (latency is not None or drop_watch) else 500
        f = Fault(verb, resource, status, count, retry_after, latency, drop_watch, name, namespace, skip)
        with self._lock:
            self._faults.append(f)
        return f

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.count is None or f.fired < f.count]

    def take(self, info: RequestInfo) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(info):
                    f.fired += 1
                    self.injected.append({**info.__dict__, "status": f.status, "latency": f.latency})
                    return f
        return None


class WatchCounter:
    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def opened(self) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def closed(self) -> None:
        self.current -= 1

    def reset_peak(self) -> None:
        self.peak = self.current


class FaultProxy:
    """The proxy on its own thread and event loop; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, upstream: str, upstream_ssl: ssl.SSLContext) -> None:
        self.upstream = upstream.rstrip("/")
        self._ssl = upstream_ssl
        self.faults = Faults()
        self.request_log: list[tuple[str, str, str | None, str | None]] = []
        self.discovery_log: list[tuple[str, str]] = []  # ("discovery", path): /version, /api, /apis/...
        self.open_watches = WatchCounter()
        self.hidden_groups: set[str] = set()
        self._users: dict[str, str] = {}  # Authorization header -> user name
        self.url = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def reset_request_log(self) -> None:
        self.request_log.clear()
        self.discovery_log.clear()

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="testcluster-faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the fault proxy did not start")
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._serve())
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.loop is None:
            return

        async def close() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _user_of(self, request: web.Request) -> str:
        """Who the request authenticates as (a SelfSubjectReview with its own credentials), so an
        injected 403 names the user as the API server's own does."""
        auth = request.headers.get("Authorization", "")
        if auth not in self._users:
            review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
            assert self._session is not None
            url = self.upstream + "/apis/authentication.k8s.io/v1/selfsubjectreviews"
            async with self._session.post(url, json=review, headers={"Authorization": auth} if auth else {}) as r:
                doc = await r.json(content_type=None) if r.status == 201 else {}
            self._users[auth] = ((doc.get("status") or {}).get("userInfo") or {}).get("username", "system:anonymous")
        return self._users[auth]

    def _hidden(self, path: str) -> bool:
        parts = [p for p in path.split("/") if p]
        return len(parts) >= 2 and parts[0] == "apis" and parts[1] in self.hidden_groups

    async def _apis_without_hidden(self, request: web.Request) -> web.Response:
        """``GET /apis`` as JSON, the hidden groups left out (the client is asked for plain
        APIGroupList JSON, not the aggregated form, which would need the same filtering)."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS | {"accept"}}
        headers["Accept"] = "application/json"
        assert self._session is not None
        async with self._session.get(self.upstream + "/apis", headers=headers) as upstream:
            doc = json.loads(await upstream.read())
        if upstream.status == 200:
            doc["groups"] = [g for g in doc.get("groups", []) if g.get("name") not in self.hidden_groups]
        return web.json_response(doc, status=upstream.status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.hidden_groups:
            if request.method == "GET" and request.path.rstrip("/") == "/apis":
                self.discovery_log.append(("discovery", request.path))
                return await self._apis_without_hidden(request)
            if self._hidden(request.path):
                info = classify(request.method, request.path, parse_qs(request.query_string))
                if info is not None:
                    self.request_log.append((info.verb, info.resource, info.namespace, info.name))
                else:
                    self.discovery_log.append(("discovery", request.path))
                # the API server's answer (its mux's NotFound handler) for a path no group serves
                return web.Response(status=404, text="404 page not found\n", content_type="text/plain", charset="utf-8")
        info = classify(request.method, request.path, parse_qs(request.query_string))
        fault = None
        if info is not None:
            self.request_log.append((info.verb, info.resource, info.namespace, info.name))
            fault = self.faults.take(info)
        else:
            self.discovery_log.append(("discovery", request.path))
        if fault is not None:
            if fault.latency:
                await asyncio.sleep(fault.latency)
            user = await self._user_of(request) if fault.status == 403 else ""
            err = fault.response(info, user)  # type: ignore[arg-type]
            if err is not None:
                return err
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        assert self._session is not None
        url = self.upstream + request.rel_url.path_qs
        watch = info is not None and info.verb == "watch"
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body or None, timeout=aiohttp.ClientTimeout(None)
            )
        except aiohttp.ClientError as e:
            return web.json_response(status_body(503, "ServiceUnavailable", f"fault proxy: {e}"), status=503)
        try:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_HEADERS:
                    resp.headers[k] = v
            await resp.prepare(request)
            if watch:
                self.open_watches.opened()
            try:
                sent = 0
                async for chunk in upstream.content.iter_any():
                    if fault is not None and fault.drop_watch and watch and sent > 0:
                        # cut mid-chunk: the client sees a broken stream
                        await resp.write(chunk[: max(1, len(chunk) // 2)])
                        request.transport.close()  # type: ignore[union-attr]
                        return resp
                    await resp.write(chunk)
                    sent += 1
                if fault is not None and fault.drop_watch and watch:
                    request.transport.close()  # type: ignore[union-attr]
                    return resp
                await resp.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass
            finally:
                if watch:
                    self.open_watches.closed()
            return resp
        finally:
            upstream.release()
