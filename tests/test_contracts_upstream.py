"""Upstream KubeSpawner's own user-options tests, run against RaySpawner.

The tests are read from a kubespawner checkout at run time, never copied here: set
``KUBESPAWNER_SRC`` to a checkout (work tree or bare git directory); without one the
tests are skipped (the PyPI sdist ships no tests). Only tests that need no cluster
(``KubeSpawner(_mock=True)``) are run, with the module's ``KubeSpawner`` name bound
to RaySpawner, so they check what callers of a KubeSpawner rely on: profile overrides
applied, and ``ValueError`` for an unlisted choice failing its regex.
"""

from __future__ import annotations

import os
import subprocess
import types
from pathlib import Path

import pytest
from kubernetes_asyncio.config import kube_config
from kubespawner.clients import load_config

from rayspawner.registry import hub_process
from rayspawner import RaySpawner

UPSTREAM_TESTS = [
    "test_user_options_set_from_form",
    "test_user_options_set_from_form_choices",
    "test_user_options_set_from_form_unlisted_choice",
    "test_user_options_set_from_form_invalid_regex",
    "test_user_options_set_from_form_no_regex",
    "test_kubespawner_override",
    "test_user_options_api",
    "test_default_profile",
]
DEFAULT_SRC = "/work/.mirror/jupyterhub+kubespawner/repo"


def _upstream_source() -> str | None:
    src = Path(os.environ.get("KUBESPAWNER_SRC", DEFAULT_SRC))
    if (src / "tests" / "test_spawner.py").is_file():
        return (src / "tests" / "test_spawner.py").read_text()
    if (src / "HEAD").is_file():  # a bare git directory: the installed release's tag, else HEAD
        from importlib.metadata import version  # noqa: PLC0415

        for rev in (version("jupyterhub-kubespawner"), "HEAD"):
            done = subprocess.run(
                ["git", "--git-dir", str(src), "show", f"{rev}:tests/test_spawner.py"], capture_output=True, text=True
            )
            if done.returncode == 0:
                return done.stdout
        return None
    return None


def _upstream_module() -> types.ModuleType | None:
    source = _upstream_source()
    if source is None:
        return None
    module = types.ModuleType("kubespawner_upstream_test_spawner")
    exec(compile(source, "kubespawner/tests/test_spawner.py", "exec"), module.__dict__)
    module.KubeSpawner = RaySpawner  # the tests construct spawners through this name
    return module


UPSTREAM = _upstream_module()
CASES = [(name, kind) for name in UPSTREAM_TESTS for kind in ("list", "dict")]


@pytest.mark.skipif(UPSTREAM is None, reason="no kubespawner checkout (set KUBESPAWNER_SRC)")
@pytest.mark.parametrize("name,kind", CASES, ids=[f"{n}[{k}]" for n, k in CASES])
async def test_upstream_user_options_test(kube, monkeypatch, name, kind):
    # KubeSpawner loads a kubeconfig even when mocked; upstream's conftest points it at a real cluster,
    # and so does this one (the hub's account, through the fault proxy that logs every request)
    emu = kube
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(emu.kubeconfig_path))
    load_config.cache_clear()
    emu.reset_request_log()
    test = getattr(UPSTREAM, name)
    profiles = UPSTREAM._test_profiles_list if kind == "list" else UPSTREAM._test_profiles_dict
    try:
        await test(profiles)
    finally:
        load_config.cache_clear()
    assert emu.request_log == []  # loading options with Ray off is no API request
    assert not hub_process.sweepers  # none of these profiles turns Ray on
