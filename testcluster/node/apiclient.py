"""A small async Kubernetes API client for the node agent (aiohttp, client-certificate auth)."""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any, AsyncIterator

import aiohttp

log = logging.getLogger("testcluster.node")


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        msg = body.get("message") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{status}: {msg}")


class Api:
    """JSON requests and watches against one API server, as one client identity."""

    def __init__(self, server: str, ctx: ssl.SSLContext) -> None:
        self.server = server.rstrip("/")
        self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        ok404: bool = False,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Accept": "application/json", "Content-Type": content_type}
        async with self.session.request(
            method, self.server + path, data=data, params=params, headers=headers, timeout=aiohttp.ClientTimeout(30)
        ) as resp:
            text = await resp.text()
            try:
                doc = json.loads(text) if text else None
            except ValueError:
                doc = text
            if resp.status == 404 and ok404:
                return None
            if resp.status >= 400:
                raise ApiError(resp.status, doc)
            return doc

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Watch events from ``resourceVersion`` in params; ends when the server ends the stream."""
        q = {**params, "watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
        async with self.session.get(self.server + path, params=q, timeout=aiohttp.ClientTimeout(None)) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, await resp.text())
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)

    async def list_and_watch(self, path: str, params: dict[str, str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """("ADDED", obj) for what exists, then every change; relists after a 410 Gone."""
        while True:
            listing = await self.request("GET", path, params=params)
            rv = listing["metadata"]["resourceVersion"]
            for obj in listing.get("items") or []:
                yield "ADDED", obj
            while True:
                gone = False
                try:
                    async for ev in self.watch(path, {**params, "resourceVersion": rv}):
                        obj = ev.get("object") or {}
                        if ev.get("type") == "ERROR":
                            gone = obj.get("code") == 410
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        if ev.get("type") != "BOOKMARK":
                            yield ev["type"], obj
                except (aiohttp.ClientError, TimeoutError) as e:
                    log.debug("watch %s broke (%s); resuming", path, e)
                if gone:
                    break
