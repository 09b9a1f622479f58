"""KubeSpawner's contracts, held by RaySpawner (issue 14).

Callers of a KubeSpawner (JupyterHub, upstream's tests, admins' hooks) rely on:

- ``load_user_options`` raising ``ValueError`` for bad options (RaySpawner's are also
  an HTTP 400 with the user's message, logged as one warning line);
- every ``progress()`` event carrying an integer ``progress`` that never decreases;
- ``get_state``/``load_state`` round-tripping;
- with Ray off (no Ray profile, ``ray_enabled`` false), exactly KubeSpawner's API
  requests: measured at the fault proxy in front of the real API server, discovery included.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner
from kubespawner.clients import load_config
from tornado import web

from rayspawner.registry import hub_process
from rayspawner.errors import InvalidOptions

from testcluster.node.kubelet_sim import SIM_DELAYS

from .spawner_fixtures import NOTEBOOK_IMAGE, RAY, RESTRICTED_TRAITS, user

REGEX_PROFILES = [
    {"display_name": "Plain", "slug": "plain", "default": True},
    {
        "display_name": "Ray",
        "slug": "ray",
        "kubespawner_override": {"ray_enabled": True},
        "profile_options": {
            "workers": {
                "display_name": "Workers",
                "choices": {"1": {"display_name": "1", "kubespawner_override": {"ray_worker_replicas": 1}}},
                "unlisted_choice": {
                    "enabled": True,
                    "validation_regex": "^[0-9]{1,2}$",
                    "kubespawner_override": {"ray_worker_replicas": "{value}"},
                },
            }
        },
    },
]

BAD_OPTIONS = [
    ("regex-mismatch", {"profile": "ray", "workers--unlisted-choice": "lots"}, "validation regex"),
    ("unknown-option", {"profile": "ray", "workerz": "2"}, "Unknown option"),
    ("over-limit-workers", {"profile": "ray", "workers--unlisted-choice": "50"}, "limit is 4"),
]


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("case,options,fragment", BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
async def test_bad_options_raise_value_error(kube, ray_spawner_factory, caplog, case, options, fragment):
    emu = kube
    emu.reset_request_log()
    sp = ray_spawner_factory(emu, profile_list=REGEX_PROFILES, ray_max_workers=4)
    sp.user_options = dict(options)
    caplog.set_level(logging.WARNING)
    with pytest.raises(ValueError) as err:
        await sp.load_user_options()
    e = err.value
    assert isinstance(e, InvalidOptions)
    # JupyterHub's HTTPError path: no traceback, shown to the user, a "failure" (4xx), not an "error"
    assert isinstance(e, web.HTTPError) and e.status_code == 400
    assert fragment in e.jupyterhub_message and fragment in str(e)
    ours = [r for r in caplog.records if fragment in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in ours] == [(logging.WARNING, None)], ours
    assert emu.request_log == []  # refused before any API request


async def test_good_options_still_load(kube, ray_spawner_factory):
    sp = ray_spawner_factory(kube, profile_list=REGEX_PROFILES, ray_orphan_sweep_interval=0)
    sp.user_options = {"profile": "ray", "workers--unlisted-choice": "3"}
    await sp.load_user_options()
    assert sp.ray_session.spec is not None and sp.ray_session.spec.desired_workers == 3


# ------------------------------------------------------------------ progress
async def _progress_of(sp: Any, options: dict) -> list[dict]:
    sp.user_options = dict(options)
    fut = asyncio.ensure_future(sp.start())
    events = [e async for e in sp.progress()]
    await asyncio.wait_for(fut, 30)
    return events


def _check_shape(events: list[dict]) -> None:
    assert events
    values = [e.get("progress") for e in events]
    assert all(type(v) is int for v in values), events  # not bool, not float, never missing
    assert all(isinstance(e.get("message"), str) for e in events), events
    assert values == sorted(values), values
    assert values[-1] >= 90 and "ready" in events[-1]["message"], events[-1]


@pytest.mark.parametrize("options", [RAY, {"profile": "plain"}], ids=["ray", "plain"])
async def test_progress_events_have_monotonic_integer_progress(kube, ray_spawner_factory, options):
    # a slow pull makes KubeSpawner emit its slow-spawn message, which has no progress of its own
    slow = {SIM_DELAYS: "pull=1.5"}
    sp = ray_spawner_factory(
        kube,
        slow_spawn_message_threshold=1,
        slow_spawn_message_frequency=1,
        extra_annotations=slow,
        ray_extra_annotations=slow,
    )
    events = await _progress_of(sp, options)
    _check_shape(events)
    messages = [e["message"] for e in events]
    assert any("Your server is starting up" in m or "patience" in m.lower() or "seconds" in m for m in messages), (
        messages
    )
    assert "Notebook scheduled on node sim-node" in messages
    assert "Notebook container started" in messages
    if options is RAY:
        assert "is ready" in messages[-1] and "ray-alice" in messages[-1]
        assert any("head starting" in m for m in messages) or any("accepting connections" in m for m in messages)
        assert any("workers joined 2/2" in m for m in messages), messages
    else:
        assert not any("Ray" in m for m in messages), messages
    await sp.stop()


async def test_progress_says_when_the_notebook_joined_its_cluster(kube, ray_spawner_factory):
    """Driver mode: the notebook pod's Ray node sidecar turning ready is a step of its own."""
    sp = ray_spawner_factory(kube)
    events = await _progress_of(sp, RAY)
    _check_shape(events)
    messages = [e["message"] for e in events]
    assert "Your notebook joined its Ray cluster ray-alice" in messages, messages
    assert "your notebook joined it" in messages[-1]
    await sp.stop()


async def test_progress_without_events_still_reports_steps(kube, ray_spawner_factory):
    """KubeSpawner's progress() returns at once when events are off; the steps must not."""
    sp = ray_spawner_factory(kube, events_enabled=False)
    events = await _progress_of(sp, RAY)
    _check_shape(events)
    await sp.stop()


# ------------------------------------------------------------------ state
async def test_state_round_trips_with_a_cluster(kube, ray_spawner_factory):
    first = ray_spawner_factory(kube)
    first.user_options = dict(RAY)
    await asyncio.wait_for(first.start(), 30)
    state = first.get_state()
    assert state["ray_cluster"] == {"name": "ray-alice", "namespace": kube.ns, "backend": "pods"}
    hub_process.sweepers.clear()  # a new hub process: no sweep yet
    second = ray_spawner_factory(kube)
    second.load_state(state)
    assert second.get_state() == state
    assert hub_process.sweepers, "a stored server with a Ray cluster starts the orphan sweep"
    second.clear_state()
    assert "ray_cluster" not in second.get_state()
    second.load_state(state)
    await asyncio.wait_for(second.stop(), 20)


async def test_state_round_trips_without_a_cluster(kube, ray_spawner_factory):
    first = ray_spawner_factory(kube)
    first.user_options = {"profile": "plain"}
    await asyncio.wait_for(first.start(), 30)
    state = first.get_state()
    assert "ray_cluster" not in state and state.get("pod_name") == first.pod_name
    second = ray_spawner_factory(kube)
    second.load_state(state)
    assert second.get_state() == state
    assert await second.poll() is None
    assert not hub_process.sweepers, "no sweep for a hub that never used Ray"
    await asyncio.wait_for(second.stop(), 20)


# ------------------------------------------------------- Ray off == KubeSpawner
async def _spawn_poll_stop(sp: Any) -> None:
    await asyncio.wait_for(sp.start(), 30)
    assert await sp.poll() is None
    await asyncio.sleep(0.5)  # a background task (a sweep) would show up here
    await asyncio.wait_for(sp.stop(), 20)
    assert await sp.poll() is not None
    await asyncio.sleep(0.5)


async def _stop_reflectors() -> None:
    for key, refl in list(KubeSpawner.reflectors.items()):
        await refl.stop()
        KubeSpawner.reflectors.pop(key, None)


def _requests(emu: Any, discovery: list) -> Counter:
    return Counter([(verb, resource, ns, name) for verb, resource, ns, name in emu.request_log] + discovery)


async def test_ray_off_makes_exactly_kubespawners_requests(kube, ray_spawner_factory, monkeypatch):
    common = dict(
        namespace=kube.ns,
        **RESTRICTED_TRAITS,
        start_timeout=30,
        http_timeout=5,
        image=NOTEBOOK_IMAGE,
        api_token="test-token",
        oauth_client_id="unused",
        k8s_api_request_retry_timeout=10,
    )

    # one API server for both: kubespawner caches its API clients (and their host) per process
    emu = kube
    discovery = emu.proxy.discovery_log
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(emu.kubeconfig_path))
    load_config.cache_clear()
    orm = SimpleNamespace(name="", server=None, user_options={}, state=None)
    plain = KubeSpawner(_mock=True, user=user("alice"), orm_spawner=orm, k8s_api_host=emu.url, **common)
    plain.user_options = {}
    await _spawn_poll_stop(plain)
    await _stop_reflectors()  # class-wide (shared with RaySpawner): the next spawner lists and watches anew
    expected = _requests(emu, discovery)

    emu.reset_request_log()  # the discovery log too
    # the production defaults: a sweep interval of 300 s (not the tests' 0), no profiles, ray_enabled False
    sp = ray_spawner_factory(emu, profile_list=[], ray_enabled=False, **common)
    assert sp.ray_orphan_sweep_interval > 0
    sp.user_options = {}
    await _spawn_poll_stop(sp)
    got = _requests(emu, discovery)

    assert ("create", "pods", kube.ns, None) in expected and ("delete", "pods", kube.ns, "jupyter-alice") in expected
    assert got == expected, f"RaySpawner extra: {got - expected}; missing: {expected - got}"
    assert not hub_process.sweepers
