"""Ports and processes of local Ray clusters (helpers of :mod:`rayspawner.backends.local`).

- :class:`PortBlocks`: blocks of :data:`NODE_PORTS` ports per Ray node, checked free
  and locked with ``flock`` in a private lock dir, so two clusters (even of two hubs of
  one user sharing a temp root) never share one; other hubs' ports are skipped because
  they listen or cannot be bound;
- :func:`find_processes` / :func:`kill_processes`: every process of a cluster, found by
  an environment marker all Ray children inherit, by temp dir or by process group —
  never by name, and never ``ray stop`` (which stops every Ray on the machine);
- :func:`orphans` / :func:`remove_cluster_dir`: clusters under a temp root that no live
  server owns (a hub crash, a notebook that died while the hub was down), and their removal.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Iterable

import psutil

from ..errors import ClusterStartError
from ..localpaths import private_dir
from ..registry import hub_process

log = logging.getLogger(__name__)

#: ports per node: offsets 0-9 fixed services, 10-39 Ray Client servers (head), 40-99 workers
NODE_PORTS = 100
_FIXED = {
    "gcs": 0,
    "client": 1,
    "dashboard": 2,
    "dashboard_agent_listen": 3,
    "dashboard_agent_grpc": 4,
    "metrics": 5,
    "node_manager": 6,
    "object_manager": 7,
    "runtime_env_agent": 8,
}
_CLIENT_SERVERS = (10, 39)
_WORKER_PORTS = (40, NODE_PORTS - 1)
#: Ray's own defaults a foreign Ray on this machine may use (specific servers 23000-23999)
_AVOID = [(23000, 24000)]
#: environment markers every process of a cluster inherits
MARKER = "RAYSPAWNER_CLUSTER_ID"
MARKER_ROOT = "RAYSPAWNER_TEMP_ROOT"
#: the temp root of the hub whose LocalRaySpawner started a notebook server (its kernels inherit it)
SERVER_ROOT = "RAYSPAWNER_SERVER_ROOT"


# --------------------------------------------------------------------- ports
def listening_ports() -> set[int]:
    """TCP ports with a LISTEN socket on this machine (IPv4 and IPv6), from /proc."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def _bindable(port: int) -> bool:
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1")):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


class PortBlocks:
    """Hands out node blocks of :data:`NODE_PORTS` ports, locked across processes.

    A block is taken only if its lock file (``<lock_dir>/<base>.lock``) can be
    flock'ed and none of its ports is listening or bound; the lock is held
    (by this process) until :meth:`release`.
    """

    def __init__(self, lock_dir: str, lo: int, hi: int):
        self.lock_dir = Path(lock_dir)
        self.lo, self.hi = lo, hi
        self._held: dict[int, int] = {}

    def _candidates(self) -> list[int]:
        first = self.lo + (-self.lo) % NODE_PORTS
        bases = [
            b
            for b in range(first, self.hi - NODE_PORTS + 2, NODE_PORTS)
            if not any(b < a_hi and b + NODE_PORTS > a_lo for a_lo, a_hi in _AVOID)
        ]
        if not bases:
            return []
        start = random.randrange(len(bases))  # spread parallel hubs over the range
        return bases[start:] + bases[:start]

    def acquire(self, count: int) -> list[int]:
        private_dir(self.lock_dir, "the local Ray port lock dir")
        taken: list[int] = []
        listening = listening_ports()
        for base in self._candidates():
            if len(taken) == count:
                break
            if base in self._held or any(p in listening for p in range(base, base + NODE_PORTS)):
                continue
            if not self._lock(base):
                continue
            if all(_bindable(p) for p in range(base, base + NODE_PORTS)):
                taken.append(base)
            else:
                self.release([base])
        if len(taken) < count:
            self.release(taken)
            raise ClusterStartError(
                f"No free block of {NODE_PORTS} ports left in {self.lo}-{self.hi} for {count} Ray node(s); "
                "stop some servers or widen LocalRaySpawner.local_port_range.",
                reason="ports",
            )
        return taken

    def _lock(self, base: int) -> bool:
        fd = os.open(self.lock_dir / f"{base}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                return False
            raise
        self._held[base] = fd
        return True

    def adopt(self, bases: Iterable[int]) -> None:
        """Re-lock the blocks of a cluster that survived a hub restart (best effort)."""
        private_dir(self.lock_dir, "the local Ray port lock dir")
        for base in bases:
            if base not in self._held:
                self._lock(base)

    def release(self, bases: Iterable[int]) -> None:
        for base in list(bases):
            fd = self._held.pop(base, None)
            if fd is not None:
                os.close(fd)


def port_blocks(lock_dir: str, lo: int, hi: int) -> PortBlocks:
    """One allocator per (lock dir, range) in this process: every spawner shares it."""
    key = (lock_dir, lo, hi)
    blocks = hub_process.port_blocks
    if key not in blocks:
        blocks[key] = PortBlocks(lock_dir, lo, hi)
    return blocks[key]


# ----------------------------------------------------------------- processes
def find_processes(
    key: str | None, value: str, *, cmdline_part: str | None = None, pgids: Iterable[int] = ()
) -> list[psutil.Process]:
    """Processes whose environment has ``key=value`` (or whose command line contains
    ``cmdline_part``, or that are in one of ``pgids``); never this process."""
    found: list[psutil.Process] = []
    pgids = set(pgids)
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == me:
            continue
        try:
            if pgids and os.getpgid(proc.pid) in pgids:
                found.append(proc)
                continue
            if cmdline_part and any(cmdline_part in a for a in proc.info["cmdline"] or ()):
                found.append(proc)
                continue
            if key and proc.environ().get(key) == value:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return [p for p in found if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def kill_processes(finder, timeout: float, grace: float = 3.0, what: str = "") -> list[int]:
    """SIGTERM what ``finder()`` returns, SIGKILL what is left after ``grace`` seconds;
    repeat until nothing is found or ``timeout``. Returns pids that never died."""
    deadline = time.monotonic() + timeout
    term_sent: dict[int, float] = {}
    while True:
        procs = await asyncio.to_thread(finder)
        if not procs:
            return []
        now = time.monotonic()
        if now > deadline:
            return [p.pid for p in procs]
        for p in procs:
            try:
                if p.pid not in term_sent:
                    p.terminate()
                    term_sent[p.pid] = now
                elif now - term_sent[p.pid] > grace:
                    log.debug("SIGKILL %s (%s)", p.pid, what)
                    p.kill()
            except psutil.Error:
                pass
        await asyncio.sleep(0.2)


def _pid_alive(pid: int, proc: asyncio.subprocess.Process | None = None) -> bool:
    if proc is not None:
        return proc.returncode is None
    if not pid:
        return False
    try:
        return _alive(psutil.Process(pid))
    except psutil.Error:
        return False


async def kill_everything_under(temp_root: str, timeout: float = 30.0) -> list[int]:
    """Kill every process of every cluster, notebook server and kernel started under
    ``temp_root`` (demo shutdown: the hub may have been killed before it stopped its servers)."""

    def everything() -> list[psutil.Process]:
        found = {p.pid: p for key in (MARKER_ROOT, SERVER_ROOT) for p in find_processes(key, temp_root)}
        return list(found.values())

    return await kill_processes(everything, timeout, what=temp_root)


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _same_process(pid: int, started: float | None) -> bool:
    """``pid`` is alive and (if ``started`` is known) is the process started then, not a reuse."""
    created = _create_time(pid)
    if created is None or not _pid_alive(pid):
        return False
    return started is None or abs(created - started) < 1.0


def _token_of(pid: int, cid: str) -> str | None:
    """A cluster's token from its head's environment (same user), after a hub restart."""
    try:
        env = psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return None
    return env.get("RAY_AUTH_TOKEN") if env.get(MARKER) == cid else None


def orphans(temp_root: str, owned: set[str], grace: float) -> list[str]:
    """Cluster ids under ``temp_root`` that no live server owns.

    A cluster is kept while this hub knows it (``owned``), while it is younger than
    ``grace`` seconds (a spawn in progress), while its notebook process (pid and start
    time in ``cluster.json``) lives, or while another live hub created or adopted it.
    """
    found: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(temp_root))
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False) or entry.name in owned:
            continue
        try:
            info = json.loads(Path(entry.path, "cluster.json").read_text())
        except (OSError, ValueError):
            info = {}
        try:
            created = float(info.get("created") or entry.stat().st_mtime)
        except OSError:
            continue
        if now - created < grace:
            continue
        if info.get("notebook_pid") and _same_process(int(info["notebook_pid"]), info.get("notebook_started")):
            continue
        hub = int(info.get("hub_pid") or 0)
        if hub and hub != os.getpid() and _pid_alive(hub):
            continue
        found.append(entry.name)
    return found


async def remove_cluster_dir(temp_root: str, cid: str, timeout: float = 60.0) -> list[int]:
    """Kill every process of cluster ``cid`` and remove its temp dir; pids that never died."""
    temp_dir = os.path.join(temp_root, cid)
    stuck = await kill_processes(lambda: find_processes(MARKER, cid, cmdline_part=temp_dir + "/"), timeout, what=cid)
    if not stuck:
        await asyncio.to_thread(shutil.rmtree, temp_dir, True)
    return stuck


def _tail(path: str, lines: int = 12) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    keep = [ln for ln in text if ln.strip()][-lines:]
    return "\n".join(keep)


def _fatal(path: str) -> str:
    """Ray's fatal line ("Check failed: ...") from a C++ log, else its tail."""
    text = _tail(path, 400)
    fatal = [ln for ln in text.splitlines() if "Check failed" in ln or "] F " in ln]
    return (fatal[-1] if fatal else "\n".join(text.splitlines()[-5:]))[-600:]


async def sweep_orphans(temp_root: str, owned: set[str], grace: float) -> list[str]:
    """Remove the clusters :func:`orphans` finds; returns the ids removed."""
    removed = []
    for cid in await asyncio.to_thread(orphans, temp_root, owned, grace):
        started = time.monotonic()
        stuck = await remove_cluster_dir(temp_root, cid)
        if stuck:
            log.error("Orphaned Ray cluster %s under %s: processes never died: %s", cid, temp_root, stuck)
        else:
            removed.append(cid)
            log.info(
                "Orphaned Ray cluster %s under %s (no live server owns it): removed in %.1f s",
                cid,
                temp_root,
                time.monotonic() - started,
            )
    return removed


def run_periodically(job, interval: float, first_delay: float, what: str) -> asyncio.Task | None:
    """``await job()`` every ``interval`` seconds in the running loop (None without one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None

    async def loop() -> None:
        await asyncio.sleep(first_delay)
        while True:
            try:
                await job()
            except Exception:  # noqa: BLE001 - one failed run must not stop the next
                log.exception("%s failed", what)
            await asyncio.sleep(interval)

    return asyncio.ensure_future(loop())
