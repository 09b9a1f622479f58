"""The process node's part of kube-proxy for the ``kubernetes`` Service, and the node's
hidden directories.

On a cluster, kube-proxy sends a pod's connection to the ``kubernetes`` Service's ClusterIP
(``10.96.0.1:443``) to the API server. Here the API server listens on the host's loopback,
which a pod's network namespace cannot reach, so each pod gets a DNAT rule (netns.py) from
``10.96.0.1:443`` to this relay on the node's bridge address, and the relay passes the bytes
on to the API server. TLS runs end to end: the pod verifies the API server's certificate
(whose SANs hold ``10.96.0.1``) with the CA from its ServiceAccount volume.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

RELAY_PORT = 443


class ApiRelay:
    """A TCP relay from ``listen_host:443`` to the API server."""

    def __init__(self, listen_host: str, upstream: tuple[str, int]) -> None:
        self.listen_host, self.upstream = listen_host, upstream
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, RELAY_PORT

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, self.listen_host, RELAY_PORT)
        log.info("kubernetes Service relay on %s:%s -> %s:%s", self.listen_host, RELAY_PORT, *self.upstream)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as e:
            log.warning("kubernetes Service relay: API server unreachable: %s", e)
            writer.close()
            return
        self.writers.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        finally:
            self.writers.difference_update((writer, up_writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            await self.server.wait_closed()
            self.server = None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def visible_needed(hidden: list[Path], keep: list[Path]) -> list[Path]:
    """``hidden`` without the directories that hold what containers must run (this Python
    environment, the checkout, the kept paths): hiding those would break every container."""
    needed = [Path(sys.prefix), Path(sys.base_prefix), Path(os.path.dirname(sys.executable)), *keep]
    needed.append(Path(__file__).resolve().parents[2])
    out = []
    for h in hidden:
        h_real = h.resolve()
        clash = [n for n in needed if n.resolve().is_relative_to(h_real)]
        if clash:
            log.warning("not hiding %s from pods: it holds %s, which containers need", h, clash[0])
        else:
            out.append(h)
    return out
