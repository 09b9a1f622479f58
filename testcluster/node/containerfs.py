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

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from .containers import Container
    from .netns import PodNet

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
