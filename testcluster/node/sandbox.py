"""One container's filesystem view, set up inside its own mount namespace, then exec'd.

Run by the process kubelet as ``python -I -S sandbox.py CONFIG_JSON`` inside
``unshare --uts --mount --propagation private`` (and the pod's network and PID namespaces).
Standard library only, and no imports of this package: it runs before the container's
environment exists. What it builds is what a container runtime gives a container:

- hostname, ``/etc/hosts`` and ``/etc/resolv.conf`` of the pod; ``/proc`` of the pod's PID
  namespace;
- a private ``/tmp``, ``$HOME`` and working directory (the image's writable layer): nothing
  another container wrote there is visible, only the host paths the kubelet keeps (this
  interpreter's environment and the checkout, when they live under ``/tmp``);
- the container's ``volumeMounts``, read-only where asked;
- the node's own directories (pod dirs of every pod, PersistentVolume paths, the cluster's
  keys and kubeconfig) hidden behind an empty tmpfs, except this container's termination-message
  file.

A mount point that does not exist is made the way runc makes it in a rootfs, without touching
the host: its deepest existing ancestor is covered by a tmpfs that mirrors the ancestor's
entries (bind mounts), and the new directory is made in that tmpfs. Only an ancestor of ``/``
itself cannot be mirrored; such a mount fails with exit code 125 and a message on stderr.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    pass


def mount(src: str | None, dst: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    if _libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"mount {src or fstype} on {dst}: {os.strerror(err)}")


def bind(src: str, dst: str, readonly: bool = False) -> None:
    mount(src, dst, flags=MS_BIND | MS_REC)
    if readonly:
        mount(None, dst, flags=MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


class Rootfs:
    """Makes mount points without writing to the host's filesystem."""

    def __init__(self, private: list[str]) -> None:
        # paths under which this container may create entries freely (its own dirs and tmpfs)
        self.private = [os.path.realpath(p) for p in private]

    def _is_private(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.private)

    def mirror(self, directory: str) -> None:
        """Cover ``directory`` with a tmpfs that shows the same entries (bind mounts)."""
        if directory == "/":
            raise SandboxError("cannot create a mount point directly under / on this node")
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
        try:
            entries = os.listdir(f"/proc/self/fd/{fd}")
            st = os.stat(directory)
            mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={st.st_mode & 0o7777:o}")
            for name in entries:
                src, dst = f"/proc/self/fd/{fd}/{name}", os.path.join(directory, name)
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                    continue
                if os.path.isdir(src):
                    os.mkdir(dst)
                else:
                    open(dst, "w").close()
                bind(src, dst)
        finally:
            os.close(fd)
        self.private.append(directory)

    def ensure(self, path: str, is_file: bool = False) -> str:
        """Make ``path`` exist (a directory, or an empty file); returns its real path."""
        path = os.path.abspath(path)
        real = os.path.realpath(path)
        if os.path.lexists(real):
            return real
        ancestor = os.path.dirname(real)
        while not os.path.isdir(ancestor):
            ancestor = os.path.dirname(ancestor)
        if not self._is_private(ancestor):
            self.mirror(ancestor)
        if is_file:
            os.makedirs(os.path.dirname(real), exist_ok=True)
            open(real, "w").close()
        else:
            os.makedirs(real, exist_ok=True)
        return real


def setup(cfg: dict) -> None:
    socket.sethostname(cfg["hostname"])
    if cfg.get("proc"):
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)
    tmp = cfg["tmp"]
    for keep in cfg.get("keep", []):  # mount points made by the kubelet in the container's tmp
        bind(keep, tmp + keep[len("/tmp") :])
    bind(tmp, "/tmp")
    rootfs = Rootfs(["/tmp"])
    # parents before children, as the kubelet orders a container's mounts
    for m in sorted(cfg.get("mounts", []), key=lambda m: os.path.normpath(m["dst"]).count("/")):
        dst = rootfs.ensure(m["dst"], is_file=os.path.isfile(m["src"]) and not os.path.isdir(m["src"]))
        bind(m["src"], dst, readonly=bool(m.get("ro")))
        rootfs.private.append(dst)
    # after the volumes: a mount under /etc mirrors /etc, and these go on top of the mirror
    bind(cfg["hosts"], "/etc/hosts")
    if cfg.get("resolv"):
        bind(cfg["resolv"], "/etc/resolv.conf")
    os.chdir(rootfs.ensure(cfg["cwd"]))
    term_fd = os.open(cfg["term"], os.O_PATH)
    for hidden in cfg.get("hide", []):
        mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    term = cfg["term"]
    os.makedirs(os.path.dirname(term), exist_ok=True)
    open(term, "w").close()
    bind(f"/proc/self/fd/{term_fd}", term)
    os.close(term_fd)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    ready = cfg.get("ready_fd")
    try:
        setup(cfg)
    except (SandboxError, OSError) as e:
        print(f"testcluster sandbox: {e}", file=sys.stderr, flush=True)
        sys.exit(125)
    if ready is not None:  # the kubelet reports the container started only now, as runc does
        os.write(ready, b"ok")
        os.close(ready)
    argv = cfg["argv"]
    try:
        os.execvpe(argv[0], argv, os.environ)
    except OSError as e:
        # what runc reports for a missing executable, with its exit code
        print(f'exec: "{argv[0]}": {e.strerror}', file=sys.stderr, flush=True)
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)


if __name__ == "__main__":
    main()
