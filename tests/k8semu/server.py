"""HTTP layer: discovery, REST routes, patch types, watch streams, auth and faults."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import yaml
from aiohttp import web

from . import errors
from .crds import refuse_writes
from .errors import ApiError
from .exec_ws import serve_exec
from .faults import Faults
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .rbac import Authorizer
from .resources import ALL_VERBS, Registry, ResourceType
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import Store
from .tables import table, wants_table

log = logging.getLogger("k8semu.server")

K8S_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-k8semu",
    "gitCommit": "k8semu",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass
class ReqInfo:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None
    verb: str

    @property
    def resource(self) -> str:
        return f"{self.rtype.plural}/{self.sub}" if self.sub else self.rtype.plural


class WatchCounter:
    """Open watch connections now and at peak (thread-safe reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def inc(self) -> None:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)

    def dec(self) -> None:
        with self._lock:
            self.current -= 1

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.current

    def __repr__(self) -> str:
        return f"<open watches current={self.current} peak={self.peak}>"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json", headers=headers)


def _error(e: ApiError) -> web.Response:
    return _json(e.body(), e.code, e.headers or None)


class ApiServer:
    def __init__(self, store: Store, registry: Registry, faults: Faults, authorizer: Authorizer | None = None) -> None:
        self.store = store
        self.registry = registry
        self.faults = faults
        self.authorizer = authorizer
        self.request_log: list[tuple[str, str, str | None, str | None]] = []
        self.log_lock = threading.Lock()
        self.watches = WatchCounter()
        self.pod_logs: Callable[[dict[str, Any], str | None], Any] | None = None
        # (pod, container, argv, stdin, stdout, stderr, tty) -> awaitable asyncio Process
        self.pod_exec: Callable[..., Any] | None = None
        self.address = "127.0.0.1:0"
        self._stopping = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # ---- discovery -----------------------------------------------------
    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for t in self.registry.types:
            if t.group != group or t.version != version:
                continue
            entry: dict[str, Any] = {
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": list(ALL_VERBS),
            }
            if t.short_names:
                entry["shortNames"] = list(t.short_names)
            if t.categories:
                entry["categories"] = list(t.categories)
            resources.append(entry)
            for sub in t.subresources:
                verbs = {"log": ["get"], "exec": ["create", "get"]}.get(sub, ["get", "patch", "update"])
                resources.append(
                    {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": verbs,
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _group(self, name: str, versions: list[str]) -> dict[str, Any]:
        vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": vs, "preferredVersion": vs[0]}

    def discovery(self, parts: list[str]) -> web.Response | None:
        groups = self.registry.groups()
        if parts == ["version"]:
            return _json(K8S_VERSION)
        if parts in (["healthz"], ["livez"], ["readyz"]):
            return web.Response(text="ok")
        if parts[:2] == ["openapi", "v3"]:
            return self.openapi_v3(parts[2:])
        if parts == ["api"]:
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}],
                }
            )
        if parts == ["api", "v1"]:
            return _json(self._resource_list("", "v1"))
        if parts == ["apis"]:
            return _json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._group(g, v) for g, v in groups.items() if g],
                }
            )
        if len(parts) == 2 and parts[0] == "apis":
            if parts[1] not in groups or not parts[1]:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            return _json({"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1], groups[parts[1]])})
        if len(parts) == 3 and parts[0] == "apis":
            if parts[1] not in groups or parts[2] not in groups[parts[1]] or not parts[1]:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            return _json(self._resource_list(parts[1], parts[2]))
        return None

    def openapi_v3(self, gv_parts: list[str]) -> web.Response:
        """Just enough OpenAPI v3 for kubectl to see that PATCH takes ``fieldValidation``
        (so it validates server-side instead of downloading schemas). No schemas are served."""
        groups = self.registry.groups()
        if not gv_parts:
            paths = {}
            for g, versions in groups.items():
                for v in versions:
                    gv = f"apis/{g}/{v}" if g else f"api/{v}"
                    paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash=k8semu"}
            return _json({"paths": paths})
        if gv_parts[0] == "api" and len(gv_parts) == 2:
            group, version = "", gv_parts[1]
        elif gv_parts[0] == "apis" and len(gv_parts) == 3:
            group, version = gv_parts[1], gv_parts[2]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if version not in groups.get(group, []):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        params = [
            {"name": n, "in": "query", "schema": {"type": "string"}}
            for n in ("dryRun", "fieldManager", "fieldValidation", "force")
        ]
        paths: dict[str, Any] = {}
        for t in self.registry.types:
            if t.group != group or t.version != version:
                continue
            path = (
                f"{prefix}/namespaces/{{namespace}}/{t.plural}/{{name}}"
                if t.namespaced
                else f"{prefix}/{t.plural}/{{name}}"
            )
            gvk = {"group": group, "version": version, "kind": t.kind}
            paths[path] = {
                "patch": {
                    "operationId": f"patch{t.kind}",
                    "parameters": params,
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"description": "OK"}},
                }
            }
        return _json(
            {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes (k8semu)", "version": "v1.31.0"},
                "paths": paths,
                "components": {"schemas": {}},
            }
        )

    # ---- request parsing ----------------------------------------------
    def parse(self, request: web.Request, parts: list[str]) -> tuple[ReqInfo, bool]:
        nf = ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise nf
        legacy_watch = bool(rest) and rest[0] == "watch"
        if legacy_watch:
            rest = rest[1:]
        ns = name = sub = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, plural, tail = rest[1], rest[2], rest[3:]
        elif rest:
            plural, tail = rest[0], rest[1:]
        else:
            raise nf
        rtype = self.registry.find(group, version, plural)
        if rtype is None:
            raise nf
        if tail:
            name = tail[0]
        if len(tail) > 1:
            sub = tail[1]
            if sub not in rtype.subresources or len(tail) > 2:
                raise nf
        if rtype.namespaced is False and ns is not None:
            raise nf
        if rtype.namespaced and name is not None and ns is None:
            raise nf
        q = request.query
        watch = legacy_watch or q.get("watch") in ("true", "1", "True")
        m = request.method
        if sub == "exec":  # a websocket GET or SPDY POST; authorized as create since Kubernetes 1.31
            if m not in ("GET", "POST"):
                raise errors.method_not_allowed()
            return ReqInfo(rtype, ns, name, sub, "create"), False
        if m == "GET":
            verb = "watch" if watch else ("get" if name else "list")
        elif m == "POST" and name is None:
            verb = "create"
        elif m == "PUT" and name:
            verb = "update"
        elif m == "PATCH" and name:
            verb = "patch"
        elif m == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            raise errors.method_not_allowed()
        return ReqInfo(rtype, ns, name, sub, verb), watch

    # ---- main handler --------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        try:
            user = self._authenticate(request)
            resp = self.discovery(parts)
            if resp is not None:
                return resp
            if parts and parts[0] == "openapi":
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            info, watch = self.parse(request, parts)
            with self.log_lock:
                self.request_log.append((info.verb, info.resource, info.namespace, info.name))
            log.debug("%s %s ns=%s name=%s user=%s", info.verb, info.resource, info.namespace, info.name, user)
            if user is not None and self.authorizer is not None:
                if not self.authorizer.allowed(
                    user, info.verb, info.rtype.group, info.resource, info.namespace, info.name
                ):
                    raise errors.forbidden(
                        user, info.verb, info.rtype.plural, info.sub, info.rtype.group, info.namespace, info.name
                    )
            refuse_writes(info.rtype, info.verb)
            fault = self.faults.take(info.verb, info.resource, info.namespace, info.name)
            if fault is not None:
                if fault.latency:
                    await asyncio.sleep(fault.latency)
                err = fault.error(info.verb, info.resource, info.namespace, info.name)
                if err is not None:
                    raise err
            if info.verb == "watch":
                return await self.watch(request, info, drop=bool(fault and fault.drop_watch))
            if info.sub == "exec":
                return await serve_exec(self, request, info)
            return await self.dispatch(request, info)
        except ApiError as e:
            return _error(e)
        except (SelectorError, PatchError) as e:
            code, reason = (400, "BadRequest") if isinstance(e, SelectorError) else (422, "Invalid")
            return _error(ApiError(code, reason, str(e)))

    def _authenticate(self, request: web.Request) -> str | None:
        if self.authorizer is None:
            return None
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        user = self.authorizer.user_for(token)
        if user is None:
            raise errors.unauthorized()
        return user

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        ctype = request.headers.get("Content-Type", "")
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(f"error decoding request body: {e}") from None

    async def dispatch(self, request: web.Request, info: ReqInfo) -> web.StreamResponse:
        st, t, ns, name = self.store, info.rtype, info.namespace, info.name
        q = request.query
        if info.verb == "get":
            obj = st.get(t, ns, name)
            if info.sub == "log":
                text = ""
                if self.pod_logs is not None:
                    res = self.pod_logs(obj, q.get("container"))
                    text = (await res) if asyncio.iscoroutine(res) else (res or "")
                return web.Response(text=text, content_type="text/plain")
            if wants_table(request.headers.get("Accept", "")):
                return _json(table(t, [obj], st.rv))
            return _json(obj)
        if info.verb == "list":
            items, rv = st.list(
                t, ns, parse_label_selector(q.get("labelSelector")), parse_field_selector(q.get("fieldSelector"))
            )
            if wants_table(request.headers.get("Accept", "")):
                return _json(table(t, items, rv))
            if t.builtin:
                for i in items:
                    i.pop("apiVersion", None)
                    i.pop("kind", None)
            return _json(
                {
                    "kind": f"{t.kind}List",
                    "apiVersion": t.api_version,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                }
            )
        if info.verb == "create":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise errors.bad_request("request body must be an object")
            self._check_kind(t, body)
            if q.get("dryRun"):
                # as the real server: a name already taken is a 409 even in a dry run
                name = (body.get("metadata") or {}).get("name")
                if name and st.find(t, ns, name) is not None:
                    raise errors.already_exists(t, name)
                return _json(body, 201)
            return _json(st.create(t, ns, body), 201)
        if info.verb == "update":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise errors.bad_request("request body must be an object")
            self._check_kind(t, body)
            return _json(st.update(t, ns, name, body, subresource=info.sub))
        if info.verb == "patch":
            return await self.patch(request, info)
        if info.verb in ("delete", "deletecollection"):
            opts = await self._body(request) or {}
            grace = q.get("gracePeriodSeconds", opts.get("gracePeriodSeconds"))
            grace = int(grace) if grace is not None else None
            prop = q.get("propagationPolicy", opts.get("propagationPolicy"))
            if prop is None and opts.get("orphanDependents") is True:
                prop = "Orphan"
            if info.verb == "delete":
                obj, removed = st.delete(t, ns, name, grace, prop, opts.get("preconditions"))
                if removed and t.plural not in ("pods", "services", "namespaces") and t.builtin:
                    return _json(
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Success",
                            "details": {
                                "name": name,
                                **({"group": t.group} if t.group else {}),
                                "kind": t.plural,
                                "uid": obj["metadata"]["uid"],
                            },
                        }
                    )
                return _json(obj)
            items = st.select(
                t, ns, parse_label_selector(q.get("labelSelector")), parse_field_selector(q.get("fieldSelector"))
            )
            out = []
            for obj in list(items):
                try:
                    out.append(st.delete(t, obj["metadata"].get("namespace"), obj["metadata"]["name"], grace, prop)[0])
                except ApiError:
                    pass
            return _json(
                {
                    "kind": f"{t.kind}List",
                    "apiVersion": t.api_version,
                    "metadata": {"resourceVersion": str(st.rv)},
                    "items": out,
                }
            )
        raise errors.method_not_allowed()

    @staticmethod
    def _check_kind(t: ResourceType, body: dict[str, Any]) -> None:
        if body.get("kind") and body["kind"] != t.kind:
            raise errors.bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match "
                f"the expected API version ({t.api_version})"
            )

    async def patch(self, request: web.Request, info: ReqInfo) -> web.StreamResponse:
        st, t = self.store, info.rtype
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = await self._body(request)
        cur = st.find(t, info.namespace, info.name)
        if ctype == "application/apply-patch+yaml":
            if cur is None:
                if not isinstance(body, dict):
                    raise errors.bad_request("apply patch must be an object")
                body.setdefault("metadata", {})["name"] = info.name
                return _json(st.create(t, info.namespace, body), 201)
            patched = (strategic_merge_patch if t.builtin else merge_patch)(cur, body)
            return _json(st.update(t, info.namespace, info.name, patched, info.sub, check_rv=False))
        if cur is None:
            raise errors.not_found(t, info.name)
        if ctype == "application/json-patch+json":
            if not isinstance(body, list):
                raise errors.bad_request(
                    "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"
                )
            patched = json_patch(cur, body)
        elif ctype == "application/merge-patch+json":
            patched = merge_patch(cur, body)
        elif ctype == "application/strategic-merge-patch+json":
            if not t.builtin:
                raise errors.unsupported_media(
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                )
            patched = strategic_merge_patch(cur, body)
        else:
            raise errors.unsupported_media(f"the body of the request was in an unknown format - {ctype}")
        if not isinstance(patched, dict):
            raise PatchError("patch result is not an object")
        rv_given = isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion")
        return _json(st.update(t, info.namespace, info.name, patched, info.sub, check_rv=bool(rv_given)))

    async def watch(self, request: web.Request, info: ReqInfo, drop: bool = False) -> web.StreamResponse:
        q = request.query
        fields = parse_field_selector(q.get("fieldSelector"))
        if info.name:
            fields.append(("metadata.name", "=", info.name))
        labels = parse_label_selector(q.get("labelSelector"))
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        )
        try:
            w = self.store.watch(info.rtype, info.namespace, labels, fields, q.get("resourceVersion"))
        except ApiError as e:
            if e.code != 410:
                raise
            await resp.prepare(request)
            await resp.write(json.dumps({"type": "ERROR", "object": e.body()}).encode() + b"\n")
            await resp.write_eof()
            return resp
        timeout = q.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        self.watches.inc()
        try:
            await resp.prepare(request)
            while True:
                if drop:
                    while not w.queue.empty():
                        item = w.queue.get_nowait()
                        if item is not None:
                            await resp.write(self._watch_line(item))
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    break
                try:
                    item = await asyncio.wait_for(w.queue.get(), wait)
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        return resp
                    continue
                if item is None:
                    break
                await resp.write(self._watch_line(item))
            await resp.write_eof()
        except ConnectionError:
            pass
        finally:
            self.store.unwatch(w)
            self.watches.dec()
        return resp

    @staticmethod
    def _watch_line(item: tuple[str, dict[str, Any]]) -> bytes:
        return json.dumps({"type": item[0], "object": item[1]}).encode() + b"\n"
