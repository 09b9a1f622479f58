"""Local mode's private directories (no Ray, no hub): hostile pre-created paths — a 0777
directory, a symlink to elsewhere, a directory of another uid — are refused with a
message naming the path and the problem, and nothing starts; the demo's state and temp
root are keyed per hub; the isolation warning is logged once."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from traitlets.config.loader import PyFileConfigLoader

from rayspawner.registry import HubProcessState
from rayspawner import demo, local_spawner, localpaths
from rayspawner.backends.local import LocalBackend
from rayspawner.localpaths import UnsafePathError, private_dir
from rayspawner.options import resolve_spec
from rayspawner.config import RayConfig

CONFIG = Path(__file__).resolve().parents[1] / "jupyterhub_config" / "local.py"
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def _world_writable(p: Path) -> Path:
    p.mkdir()
    p.chmod(0o777)
    return p


def _symlink(p: Path) -> Path:
    target = p.parent / "elsewhere"
    target.mkdir(mode=0o700)
    p.symlink_to(target)
    return p


def _other_owner(p: Path) -> Path:
    p.mkdir(mode=0o700)
    os.chown(p, NOBODY, NOBODY)
    return p


HOSTILE = [
    pytest.param(_world_writable, r"mode is 0777, open to group or other users.*chmod 700", id="0777"),
    pytest.param(_symlink, r"symbolic link \(to .*elsewhere\).*Remove the link", id="symlink"),
    pytest.param(_other_owner, r"owned by uid 65534.*not by this hub's user", id="other-owner", marks=needs_root),
]


def test_fresh_dir_is_created_private(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b")
    st = os.lstat(made)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    assert private_dir(made) == made  # an existing private one is fine


@pytest.mark.parametrize("make, problem", HOSTILE)
def test_hostile_dir_is_refused_with_what_and_how(tmp_path: Path, make, problem: str) -> None:
    path = make(tmp_path / "root")
    with pytest.raises(UnsafePathError, match=problem) as e:
        private_dir(path, "the test dir")
    assert f"Refusing to use the test dir {path}:" in str(e.value) and "Nothing was started" in str(e.value)


def test_parent_writable_by_others_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    shared = _world_writable(tmp_path / "shared")
    with pytest.raises(UnsafePathError, match=rf"parent {shared} \(mode 0777\) can be written by other users"):
        private_dir(shared / "mine")
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot rename what is ours
    private_dir(shared / "mine")


def _spec(user: str = "alice"):
    return resolve_spec(
        RayConfig(ray_worker_replicas=1), username=user, servername="", namespace="local", notebook_image="local"
    )


@pytest.mark.parametrize("make, problem", HOSTILE)
async def test_backend_starts_nothing_under_a_hostile_temp_root(tmp_path: Path, make, problem: str) -> None:
    root = make(tmp_path / "root")
    backend = LocalBackend(temp_root=str(root), port_range=(29000, 29999))
    with pytest.raises(UnsafePathError, match=problem):
        await backend.prepare(_spec())
    assert backend.clusters == {} and not backend.blocks._held
    assert os.listdir(root) == []  # no cluster dir, no site/, no port locks
    assert await backend.sweep_orphans(grace=0) == []  # the sweep does not work there either


class _User:
    name = "alice"
    url = "/user/alice/"


@pytest.mark.parametrize("profile", ["plain", "ray"])
@pytest.mark.parametrize("make, problem", HOSTILE)
async def test_spawner_refuses_before_the_notebook_or_ray_starts(tmp_path: Path, make, problem, profile) -> None:
    root = make(tmp_path / "root")
    s = local_spawner.LocalRaySpawner(
        profile_list=[
            {"display_name": "plain", "slug": "plain", "default": True},
            {"display_name": "Ray", "slug": "ray", "kubespawner_override": {"ray_enabled": True}},
        ],
        local_gpus=0,
        local_temp_root=str(root),
    )
    s.user = _User()
    s.user_options = {"profile": profile}
    with pytest.raises(UnsafePathError, match=problem):
        await s.start()
    ref = s.ray_session.ref
    assert not s.pid and (ref is None or s.backend.cluster(ref) is None) and os.listdir(root) == []


@pytest.mark.parametrize("make, problem", HOSTILE)
async def test_spawner_refuses_a_hostile_notebook_home(tmp_path: Path, make, problem: str) -> None:
    home = make(tmp_path / "alice")
    s = local_spawner.LocalRaySpawner(
        local_gpus=0, local_temp_root=str(tmp_path / "rsp"), home_dir_template=str(tmp_path / "{username}")
    )
    s.user = _User()
    s.user_options = {}
    with pytest.raises(UnsafePathError, match=problem) as e:
        await s.start()
    assert f"the notebook home of alice (LocalRaySpawner.home_dir_template) {home}:" in str(e.value)
    assert not s.pid


def test_default_temp_root_and_home_are_per_user_and_private() -> None:
    s = local_spawner.LocalRaySpawner()
    s.user = _User()
    uid = os.geteuid()
    assert s.temp_root == f"/tmp/rsp-{uid}"
    assert s.home_dir == f"/tmp/rsp-{uid}/.home/alice"  # a dot dir: the orphan sweep skips it


def test_isolation_warning_once(monkeypatch, caplog) -> None:
    monkeypatch.setattr(local_spawner, "hub_process", HubProcessState())  # a fresh hub process
    with caplog.at_level(logging.WARNING):
        local_spawner.LocalRaySpawner()
        local_spawner.LocalRaySpawner()
    lines = [r for r in caplog.records if "/proc/<pid>/environ" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "only for yourself or users who trust each other" in lines[0].getMessage()


# ------------------------------------------------------------------ per hub
def _load_local_config(monkeypatch, port: int):
    monkeypatch.setenv("RAYSPAWNER_HUB_PORT", str(port))
    return PyFileConfigLoader(CONFIG.name, str(CONFIG.parent)).load_config()


def test_two_hubs_get_their_own_state_pid_file_and_temp_root(tmp_path: Path, monkeypatch) -> None:
    for var in ("RAYSPAWNER_STATE_DIR", "RAYSPAWNER_TEMP_ROOT", "RAYSPAWNER_DB_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("RAYSPAWNER_DEMO_PASSWORD", "pw")
    monkeypatch.setattr(localpaths, "TEMP_BASE", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(mode=0o700)
    a, b = _load_local_config(monkeypatch, 8000), _load_local_config(monkeypatch, 8100)
    uid = os.geteuid()
    assert a.ConfigurableHTTPProxy.pid_file == str(tmp_path / "state/rayspawner/hub-8000/proxy.pid")
    assert b.ConfigurableHTTPProxy.pid_file == str(tmp_path / "state/rayspawner/hub-8100/proxy.pid")
    assert a.LocalRaySpawner.local_temp_root == str(tmp_path / f"tmp/rsp-{uid}-8000")
    assert b.LocalRaySpawner.local_temp_root == str(tmp_path / f"tmp/rsp-{uid}-8100")
    for key in (
        ("JupyterHub", "db_url"),
        ("JupyterHub", "cookie_secret_file"),
        ("LocalRaySpawner", "home_dir_template"),
    ):
        assert a[key[0]][key[1]] != b[key[0]][key[1]], key
    for d in (tmp_path / "state/rayspawner/hub-8000", tmp_path / f"tmp/rsp-{uid}-8100"):
        assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700


def test_default_demo_state_is_the_users_own(monkeypatch) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert localpaths.demo_state_dir(8000) == Path.home() / ".local/state/rayspawner/hub-8000"
    assert localpaths.demo_temp_root(8000) == f"/tmp/rsp-{os.geteuid()}-8000"


@pytest.mark.parametrize("make, problem", HOSTILE)
def test_local_config_refuses_a_hostile_state_dir(tmp_path: Path, monkeypatch, make, problem: str) -> None:
    state = make(tmp_path / "state")
    monkeypatch.setenv("RAYSPAWNER_STATE_DIR", str(state))
    monkeypatch.setenv("RAYSPAWNER_TEMP_ROOT", str(tmp_path / "rsp"))
    with pytest.raises(SystemExit, match=problem):
        _load_local_config(monkeypatch, 8000)
    assert os.listdir(state) == []  # no database, cookie secret or password written


@pytest.mark.parametrize("which", ["state", "temp"])
@pytest.mark.parametrize("make, problem", HOSTILE)
def test_demo_refuses_hostile_dirs_before_starting_the_hub(tmp_path, monkeypatch, capsys, make, problem, which) -> None:
    monkeypatch.setattr(localpaths, "TEMP_BASE", str(tmp_path))
    state = tmp_path / "state"
    if which == "state":
        make(state)
    else:
        make(Path(localpaths.demo_temp_root(8123)))
    monkeypatch.setattr(demo.shutil, "which", lambda name: "/usr/bin/" + name)

    def no_hub(*a, **kw):
        raise AssertionError("the hub was started")

    monkeypatch.setattr(subprocess, "Popen", no_hub)
    assert demo.main(["--port", "8123", "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rayspawner demo: Refusing to use the demo's") and "Nothing was started" in err
    assert re.search(problem, err)
