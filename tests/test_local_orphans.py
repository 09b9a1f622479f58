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
