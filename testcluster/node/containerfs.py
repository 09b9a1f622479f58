"""What one container of the process node sees: the argv that builds its sandbox
(``sandbox.py`` in the pod's namespaces) and the argv that enters it (``kubectl exec``, exec
probes).

The node has no images. Every container runs this machine's Python environment with the
image configuration of the project's own images (``images/*/Containerfile``): ``HOME`` and
the working directory are ``/opt/app-root/src``. As in a container's writable layer, ``/tmp``,
``$HOME`` and the working directory are private to the container and start empty at every
(re)start; containers of one pod share only their volumes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ..controlplane import API_SERVICE_IP
from .netns import render_hosts, run_captured

if TYPE_CHECKING:
    from .containers import Container
    from .kubelet_api import PodContext
    from .kubelet_process import ProcessKubelet
    from .netns import PodNet
    from .volumes import PodVolumes

log = logging.getLogger(__name__)

IMAGE_HOME = "/opt/app-root/src"
IMAGE_WORKDIR = "/opt/app-root/src"
SANDBOX = Path(__file__).with_name("sandbox.py")


def fresh_dirs(pod_dir: Path, name: str, keep: list[Path]) -> tuple[Path, Path]:
    """The container's own ``tmp`` and ``home`` directories, empty (with mount points for the
    kept host paths under /tmp)."""
    base = pod_dir / "containers" / name
    shutil.rmtree(base, ignore_errors=True)
    tmp, home = base / "tmp", base / "home"
    tmp.mkdir(parents=True)
    home.mkdir()
    tmp.chmod(0o1777)
    for k in keep:
        (tmp / k.relative_to("/tmp")).mkdir(parents=True, exist_ok=True)
    return tmp, home


def covered(path: str, mounts: list[dict[str, Any]]) -> bool:
    """Whether a volume is mounted at ``path`` or above it."""
    p = Path(path)
    return any(p == Path(m["dst"]) or p.is_relative_to(m["dst"]) for m in mounts)


def sandbox_argv(net: PodNet, cfg: dict[str, Any]) -> list[str]:
    """argv that runs ``cfg["argv"]`` in a new mount and UTS namespace inside the pod's network
    and PID namespaces, after ``sandbox.py`` has built the container's view from ``cfg``."""
    return [
        *net.enter_argv(),
        "unshare",
        "--uts",
        "--mount",
        "--propagation",
        "private",
        sys.executable,
        "-I",
        "-S",
        str(SANDBOX),
        json.dumps(cfg),
    ]


def container_pid(c: Container, net: PodNet) -> int | None:
    """Host PID of the container's process, whose namespaces ``kubectl exec`` enters (nsenter
    forks once when it enters the pod's PID namespace)."""
    if c.proc is None or c.proc.returncode is not None:
        return None
    if not net.pid_holder:
        return c.proc.pid
    try:
        kids = psutil.Process(c.proc.pid).children()
    except psutil.NoSuchProcess:
        return None
    return kids[0].pid if kids else None


def enter_argv(pid: int, argv: list[str]) -> list[str]:
    """argv that runs ``argv`` in the namespaces of the container process ``pid``, in its
    working directory: what the kubelet's exec does through the runtime."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--net", "--pid", "--wd", *argv]


class ContainerSandbox:
    """A pod's hosts file, and the argv that starts a container in its sandbox or enters it.
    A mixin of :class:`kubelet_process.PodRunner`."""

    k: ProcessKubelet
    ctx: PodContext
    name: str
    namespace: str
    dir: Path
    net: PodNet | None
    hosts_path: Path
    resolv_path: Path
    volumes: PodVolumes
    _hosts_text: str

    if TYPE_CHECKING:

        def argv(self, c: Container) -> list[str]: ...

    def write_hosts(self) -> None:
        assert self.net is not None
        try:
            names = self.ctx.service_hosts()
        except Exception:  # noqa: BLE001
            log.exception("service_hosts failed")
            names = {}
        if self.k.api_relay:  # cluster DNS's names for the `kubernetes` Service
            suffixes = [".default.svc.cluster.local", ".default.svc", ".default"] + [""] * (self.namespace == "default")
            names.update({f"kubernetes{sfx}": API_SERVICE_IP for sfx in suffixes})
        text = render_hosts(self.name, self.net.ip, names)
        if text != self._hosts_text:
            # In place (same inode: the bind mounts in running containers see the change), in one
            # write and never truncated: a resolver reading between a truncate and a write saw an
            # empty file. A shorter text is padded with blank lines to the old length instead.
            data = text.encode()
            fd = os.open(self.hosts_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                data += b"\n" * max(0, os.fstat(fd).st_size - len(data))
                os.pwrite(fd, data, 0)
            finally:
                os.close(fd)
            self._hosts_text = text

    async def _refresh_hosts(self) -> None:
        while not await asyncio.sleep(self.k.hosts_refresh_interval):
            self.write_hosts()

    def container_argv(self, c: Container) -> tuple[list[str], str]:
        """The argv that starts ``c`` in its own sandbox (containerfs.py), and its host cwd
        (without mount namespaces: the container's own dirs, and the host's paths)."""
        assert self.net is not None
        tmp, home = fresh_dirs(self.dir, c.name, self.k.keep_paths)
        argv = self.argv(c)
        if not self.k.use_mountns:
            cwd = c.spec.get("workingDir") or str(home)
            return argv, cwd if os.path.isdir(cwd) else str(home)
        mounts = self.volumes.mounts(c)
        home_path = c.env.get("HOME", IMAGE_HOME)
        if not covered(home_path, mounts):
            mounts.append({"src": str(home), "dst": home_path})
        cfg = {
            "hostname": self.name,
            "hosts": str(self.hosts_path),
            "resolv": str(self.resolv_path) if self.net.netns else "",
            "proc": bool(self.net.pid_holder),
            "tmp": str(tmp),
            "keep": [str(k) for k in self.k.keep_paths],
            "mounts": mounts,
            "cwd": c.spec.get("workingDir") or IMAGE_WORKDIR,
            "term": str(c.term_path),
            "hide": [str(h) for h in self.k.hide_paths],
            "argv": argv,
        }
        return sandbox_argv(self.net, cfg), "/"

    def enter(self, c: Container, argv: list[str]) -> tuple[list[str], str]:
        """argv and cwd that run ``argv`` inside the running container ``c`` (``kubectl exec``);
        raises LookupError if it is not running."""
        assert self.net is not None
        if not self.k.use_mountns:
            return argv, c.spec.get("workingDir") if os.path.isdir(c.spec.get("workingDir") or "") else "/"
        pid = container_pid(c, self.net)
        if pid is None:
            raise LookupError(f"container {c.name} is not running")
        return enter_argv(pid, argv), "/"

    async def exec(self, c: Container, argv: list[str], timeout: float) -> tuple[int, str]:
        """Run ``argv`` inside the container (like ``kubectl exec``); (returncode, output)."""
        try:
            full, cwd = self.enter(c, argv)
        except LookupError as e:
            return 126, str(e)
        return await run_captured(full, c.env, cwd, timeout)
