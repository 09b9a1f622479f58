"""Private directories for local mode, and where the demo keeps its state.

Local mode writes things another local account must not control: the Ray clusters'
temp dirs (each holds a ``site/`` directory on every Ray process's ``PYTHONPATH``, so
whoever can write there runs code as the hub's user), the port lock files, and the
demo's hub database, cookie secret and password. A directory such as ``/tmp/x`` that
someone else created first (world-writable, a symlink to their own directory, or
owned by them) would hand them all of that, so every such directory is created with
mode 0700 and then checked with ``lstat`` before use: a directory, not a symlink,
owned by the current user, no group/other permission bits, and no ancestor that
another account could swap out (owned by someone else, or writable by others
without the sticky bit, as ``/tmp`` has). Anything else is refused with
:class:`UnsafePathError`, naming the path, what is wrong and how to fix it.

Paths keyed per hub (the demo's public port), so two hubs on one machine never share
a pid file, a database or a temp root (whose processes the demo kills on exit):

- state: ``$XDG_STATE_HOME/rayspawner/hub-<port>`` (``~/.local/state/...`` when unset);
- Ray temp root: ``/tmp/rsp-<uid>-<port>``. It stays under ``/tmp`` and short because
  Ray's unix socket paths (``<root>/<cluster>/w<i>/session_<date>_<pid>/sockets/...``)
  must stay under ~107 characters, which a home directory path can exceed.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from .errors import ConfigError

#: short on purpose: Ray's unix socket paths live below it
TEMP_BASE = "/tmp"


class UnsafePathError(ConfigError):
    """A local-mode directory another account could control; nothing was started."""

    reason_label = "unsafe_path"


def _who(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _refuse(path: str, what: str, problem: str, fix: str) -> UnsafePathError:
    return UnsafePathError(
        f"Refusing to use {what} {path}: {problem}. Another local account could plant code or read "
        f"secrets there. {fix} Nothing was started."
    )


def _ancestors(path: str) -> list[str]:
    """The literal parent chain of ``path`` and the real directories it resolves to."""
    chain: list[str] = []
    for start in (os.path.dirname(os.path.abspath(path)), os.path.realpath(os.path.dirname(os.path.abspath(path)))):
        p = start
        while True:
            if p not in chain:
                chain.append(p)
            if p == os.path.dirname(p):
                break
            p = os.path.dirname(p)
    return chain


def check_private_dir(path: str | os.PathLike, what: str = "directory") -> Path:
    """Raise :class:`UnsafePathError` unless ``path`` is a private directory of this user."""
    p = os.path.abspath(os.fspath(path))
    me = os.geteuid()
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise _refuse(p, what, "it does not exist", "Create it with mode 0700, or let rayspawner create it.") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(
            p,
            what,
            f"it is a symbolic link (to {os.readlink(p)}), not a directory of its own",
            f"Remove the link (rm {p}) and start again, or choose another directory.",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(p, what, "it exists and is not a directory", f"Remove it (rm {p}) or choose another path.")
    if st.st_uid != me:
        raise _refuse(
            p,
            what,
            f"it is owned by {_who(st.st_uid)}, not by this hub's user ({_who(me)})",
            f"Remove it (as root: rm -rf {p}) or choose another directory.",
        )
    if st.st_mode & 0o077:
        raise _refuse(
            p,
            what,
            f"its mode is {stat.S_IMODE(st.st_mode):04o}, open to group or other users",
            f"If its contents are yours, make it private (chmod 700 {p}); else remove it (rm -rf {p}).",
        )
    for anc in _ancestors(p):
        try:
            ast = os.lstat(anc)
        except OSError as e:
            raise _refuse(p, what, f"its parent {anc} cannot be inspected ({e})", "Choose another directory.") from e
        if ast.st_uid not in (0, me):
            raise _refuse(
                p,
                what,
                f"its parent {anc} is owned by {_who(ast.st_uid)}, who could replace it",
                "Choose a directory whose parents belong to root or to you.",
            )
        writable_by_others = ast.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if not stat.S_ISLNK(ast.st_mode) and writable_by_others and not ast.st_mode & stat.S_ISVTX:
            raise _refuse(
                p,
                what,
                f"its parent {anc} (mode {stat.S_IMODE(ast.st_mode):04o}) can be written by other users "
                "without the sticky bit, so they could replace it",
                f"Remove group/other write permission from {anc} (chmod go-w {anc}) or choose another directory.",
            )
    return Path(p)


def private_dir(path: str | os.PathLike, what: str = "directory") -> Path:
    """Create ``path`` (and missing parents) with mode 0700 if needed, then
    :func:`check_private_dir` it: an existing directory is used only if it passes."""
    p = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(p)
    if not os.path.lexists(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.mkdir(p, 0o700)
    except FileExistsError:
        pass  # someone's (maybe ours from before): the check decides
    except OSError as e:
        raise _refuse(p, what, f"it cannot be created ({e.strerror})", "Choose another directory.") from e
    return check_private_dir(p, what)


def user_temp_root() -> str:
    """Default Ray temp root of a hub: per user (``/tmp/rsp-<uid>``), short for Ray's sockets."""
    return os.path.join(TEMP_BASE, f"rsp-{os.geteuid()}")


def hub_key(port: int | str) -> str:
    return f"hub-{int(port)}"


def state_base() -> Path:
    """``$XDG_STATE_HOME`` if set to an absolute path, else ``~/.local/state``."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    return Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"


def demo_state_dir(port: int | str) -> Path:
    """The demo hub's database, cookie secret, password, pid file and user homes."""
    return state_base() / "rayspawner" / hub_key(port)


def demo_temp_root(port: int | str) -> str:
    """The demo hub's Ray temp root: its own, so its exit sweep touches only its clusters."""
    return os.path.join(TEMP_BASE, f"rsp-{os.geteuid()}-{int(port)}")
