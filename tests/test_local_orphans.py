"""The local orphan sweep: clusters under the temp root that no live server owns go away.

Stand-in "Ray processes" are ``sleep`` processes carrying a cluster's marker, as every
Ray process of a local cluster does; no Ray is started.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil

from rayspawner.backends.local import MARKER, LocalBackend, find_processes


def _process(cid: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if cid:
        env[MARKER] = cid
    return subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _cluster_dir(root: Path, cid: str, **info) -> Path:
    root.mkdir(mode=0o700, exist_ok=True)  # the sweep works only under a private temp root
    d = root / cid
    d.mkdir()
    (d / "cluster.json").write_text(json.dumps({"cid": cid, **info}))
    return d


async def test_sweep_removes_only_clusters_no_live_server_owns(tmp_path: Path) -> None:
    root = tmp_path / "r"
    old = time.time() - 3600
    dead = _dead_pid()
    notebook, other_hub = _process(), _process()
    procs = {cid: _process(cid) for cid in ("orphan01", "owned001", "young001", "livenb01", "otherhub")}
    try:
        _cluster_dir(root, "orphan01", created=old, hub_pid=dead, notebook_pid=dead)
        _cluster_dir(root, "owned001", created=old, hub_pid=dead)
        _cluster_dir(root, "young001", created=time.time(), hub_pid=dead)
        _cluster_dir(
            root,
            "livenb01",
            created=old,
            hub_pid=dead,
            notebook_pid=notebook.pid,
            notebook_started=psutil.Process(notebook.pid).create_time(),
        )
        _cluster_dir(root, "otherhub", created=old, hub_pid=other_hub.pid)
        (root / ".ports").mkdir()

        backend = LocalBackend(temp_root=str(root))
        backend.clusters["ray-owned"] = type("C", (), {"cid": "owned001"})()  # a server of this hub
        removed = await backend.sweep_orphans(grace=60)

        assert removed == ["orphan01"]
        assert not (root / "orphan01").exists() and not find_processes(MARKER, "orphan01")
        for cid in ("owned001", "young001", "livenb01", "otherhub"):
            assert (root / cid).exists(), cid
            assert procs[cid].poll() is None, f"{cid}'s process was killed"
        assert (root / ".ports").exists()

        # a notebook pid that was reused by another process does not keep a cluster alive
        _cluster_dir(root, "reused01", created=old, hub_pid=dead, notebook_pid=notebook.pid, notebook_started=1.0)
        assert await backend.sweep_orphans(grace=60) == ["reused01"]
    finally:
        for p in [notebook, other_hub, *procs.values()]:
            p.kill()
            p.wait()


async def test_demo_clean_up_kills_clusters_servers_and_kernels_of_its_root_only(tmp_path: Path) -> None:
    """The demo's last resort after a hub that had to be killed: every process started under its
    temp root goes (Ray nodes, and notebook servers with their kernels), another root's stay."""
    from rayspawner.backends.local import MARKER_ROOT, SERVER_ROOT, kill_everything_under

    root, other = str(tmp_path / "demo"), str(tmp_path / "other")

    def marked(**markers: str) -> subprocess.Popen:
        return subprocess.Popen(["sleep", "300"], env={**os.environ, **markers}, start_new_session=True)

    ray_node, server, theirs = (
        marked(**{MARKER_ROOT: root}),
        marked(**{SERVER_ROOT: root}),
        marked(**{SERVER_ROOT: other}),
    )
    try:
        assert {p.pid for p in find_processes(SERVER_ROOT, root)} == {server.pid}
        left = await kill_everything_under(root, timeout=10)
        assert left == []
        assert ray_node.wait(5) is not None and server.wait(5) is not None
        assert theirs.poll() is None
    finally:
        for p in (ray_node, server, theirs):
            p.kill()
            p.wait()
