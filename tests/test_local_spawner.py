"""LocalRaySpawner without processes: profiles, options, limits, env, args, state."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rayspawner.errors import InvalidOptions
from rayspawner.local_spawner import LocalRaySpawner

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("example_profiles", ROOT / "jupyterhub_config" / "profiles.py")
profiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profiles)


class _User:
    name = "alice"
    url = "/user/alice/"


def spawner(**kw) -> LocalRaySpawner:
    s = LocalRaySpawner(profile_list=profiles.visible_profiles(), local_gpus=0, **profiles.LIMITS, **kw)
    s.user = _User()
    return s


async def load(s: LocalRaySpawner, options: dict) -> LocalRaySpawner:
    s.user_options = options
    await s.load_user_options()
    return s


def test_form_is_kubespawners_with_our_profiles() -> None:
    form = spawner().options_form
    for slug in ("plain", "ray", "ray-large", "ray-gpu"):
        assert f'value="{slug}"' in form
    assert "profile-option-ray--workers" in form and "profile-option-ray--worker_size" in form
    assert "profile-option-ray--workers--unlisted-choice" in form


def test_options_from_form() -> None:
    opts = spawner().options_from_form(
        {
            "profile": ["ray"],
            "profile-option-ray--workers": ["2"],
            "profile-option-ray--worker_size": ["medium"],
            "junk": ["x"],
        }
    )
    assert opts == {"profile": "ray", "workers": "2", "worker_size": "medium"}


async def test_ray_profile_and_options_make_the_spec() -> None:
    s = await load(spawner(), {"profile": "ray"})
    spec = s.ray_session.spec
    assert spec and spec.name == "ray-alice" and spec.head.cpu == "1"
    assert [(g.name, g.replicas, g.resources.cpu) for g in spec.worker_groups] == [("workers", 1, "1")]
    await load(s, {"profile": "ray", "workers": "2", "worker_size": "medium"})
    assert [(g.replicas, g.resources.cpu, g.resources.memory) for g in s.ray_session.spec.worker_groups] == [
        (2, "2", "2Gi")
    ]
    await load(s, {"profile": "ray", "workers--unlisted-choice": "3"})
    assert s.ray_session.spec.desired_workers == 3
    # overrides of an earlier spawn never leak into the next one
    await load(s, {"profile": "plain"})
    assert s.ray_session.spec is None and s.ray_enabled is False
    await load(s, {"profile": "ray"})
    assert s.ray_session.spec.desired_workers == 1 and s.ray_worker_cpu == "1"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "ray", "workers--unlisted-choice": "9"}, "limit is 4"),
        ({"profile": "ray", "workers--unlisted-choice": "x; rm -rf /"}, "failed validation regex"),
        ({"profile": "ray", "workers--unlisted-choice": "-1"}, "failed validation regex"),
        ({"profile": "ray", "workers": "lots"}, "not one of the choices"),
        ({"profile": "ray", "bogus": "1"}, "Unknown option"),
        ({"profile": "nope"}, "No such profile"),
        ({"profile": "ray-gpu"}, "this machine has 0"),
        ({"profile": ["ray"]}, "must be a string"),
    ],
)
async def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(InvalidOptions, match=message) as e:
        await load(spawner(), options)
    assert e.value.status_code == 400


async def test_gpu_profile_allowed_when_gpus_exist() -> None:
    s = spawner()
    s.local_gpus = 1
    await load(s, {"profile": "ray-gpu"})
    assert s.ray_session.spec.total.gpu == 1


def test_kubernetes_only_overrides_are_ignored() -> None:
    s = spawner()
    s._apply_overrides({"image": "quay.io/x/y:1", "ray_worker_replicas": 2})
    assert s.ray_worker_replicas == 2 and not hasattr(s, "image")


def test_args_env_and_defaults() -> None:
    s = spawner()
    assert s.cmd[1:] == ["-m", "jupyterhub.singleuser"]
    assert s.start_timeout == 300
    import os

    if os.geteuid() == 0:
        assert "--allow-root" in s.get_args()


def test_bad_port_range_is_a_config_error() -> None:
    with pytest.raises(Exception, match="LOW-HIGH"):
        spawner(local_port_range="30000-30010")


async def test_progress_rises_in_plain_words(monkeypatch) -> None:
    from rayspawner.backends.base import ClusterStatus

    seq = [
        ClusterStatus(phase="starting", workers_desired=2),
        ClusterStatus(head_ready=True, workers_desired=2),
        ClusterStatus(head_ready=True, workers_ready=1, workers_desired=2),
        ClusterStatus(head_ready=True, workers_ready=0, workers_desired=2),  # a worker died
        ClusterStatus(head_ready=True, workers_ready=2, workers_desired=2),
    ]
    cluster = type("C", (), {"events": []})()

    class Backend:
        kind = "local"

        def cluster(self, ref):
            return cluster

        async def status(self, spec):
            st = seq.pop(0)
            if st.workers_ready == 0 and st.head_ready and not cluster.events and len(seq) == 1:
                cluster.events.append("worker workers-1 died (its process exited); restarting it")
            return st

    monkeypatch.setattr(LocalRaySpawner, "backend", property(lambda self: Backend()))
    monkeypatch.setattr("rayspawner.local_spawner.asyncio.sleep", _no_sleep)
    s = await load(spawner(), {"profile": "ray", "workers": "2"})
    s._notebook_phase = "started"
    events = [e async for e in s.progress()]
    pcts = [e["progress"] for e in events]
    assert all(isinstance(p, int) for p in pcts) and pcts == sorted(pcts), events
    text = "\n".join(e["message"] for e in events)
    for words in (
        "Ray head of ray-alice: starting",
        "Notebook server started",
        "accepting connections",
        "Ray workers joined 1/2",
        "workers-1 died",
        "Ray workers joined 2/2",
        "is ready",
    ):
        assert words in text, (words, text)


async def _no_sleep(_seconds: float) -> None:
    return None


def test_local_profiles_say_that_sizes_are_not_isolated() -> None:
    """The demo's Ray profiles say that local mode does not isolate CPU or memory."""
    local = {p["slug"]: p for p in profiles.visible_profiles(local=True)}
    plain = {p["slug"]: p for p in profiles.visible_profiles()}
    for slug, p in local.items():
        is_ray = (p.get("kubespawner_override") or {}).get("ray_enabled")
        assert (profiles.LOCAL_MODE_NOTE in p["description"]) == bool(is_ray), slug
        assert profiles.LOCAL_MODE_NOTE not in plain[slug]["description"]
    assert (
        "visible_profiles(gpus=None if show_gpu else 0, local=True)"
        in (ROOT / "jupyterhub_config" / "local.py").read_text()
    )
