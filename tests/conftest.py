"""Shared pytest configuration."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.k8semu.fixtures", "tests.spawner_fixtures", "tests.local_hub"]

#: modules whose slow tests boot real Ray clusters. Under pytest-xdist (``--dist loadgroup``)
#: each group of them runs on one worker, one test after another; the other slow tests (hubs,
#: API faults) run beside them at a lower CPU priority (see pytest_runtest_setup). Two groups:
#: the local-mode clusters ("real-ray"), and the two tests that boot the most nodes
#: (``RAY_LAST``, "real-ray-last"), which run last on the other worker, once the niced tests
#: are done; so at most two Ray tests run at once, and Ray's start-up windows (stretched for
#: them where a test can) hold on 2 cores.
REAL_RAY_MODULES = {
    "test_browser",
    "test_cost_activity",
    "test_cost_culler",
    "test_cost_quotas_hub",
    "test_dashboard_proxy",
    "test_e2e_kubernetes",
    "test_e2e_local",
    "test_local_backend",
    "test_local_demo",
}


#: quick modules whose cases each run a whole spawn+stop under injected API faults with tight
#: retry bounds: one worker runs them one after another, so they never load the machine together
#: (four at once once pushed a stop past its bound)
SERIAL_QUICK_MODULES = {"test_reliability_faults"}


#: real-Ray modules collected last (so scheduled last), in this order
RAY_LAST = ("test_local_backend", "test_e2e_kubernetes")


def _module(item: pytest.Item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: RAY_LAST.index(_module(item)) + 1 if _module(item) in RAY_LAST else 0)


def group_of(nodeid: str) -> str:
    """The xdist scope of a test: "real-ray" for the real-Ray modules, the module for the
    serial quick ones, else the test itself (spread over the workers like ``--dist load``)."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    if module in RAY_LAST:
        return "real-ray-last"
    if module in REAL_RAY_MODULES:
        return "real-ray"
    if module in SERIAL_QUICK_MODULES:
        return module
    return nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` scheduled by :func:`group_of`. xdist's own loadgroup marks node ids
    with an ``@group`` suffix, which pytest 9.2 ignores (it keeps the id in ``Node._id``):
    every test would be spread over the workers, two Ray clusters booting at once."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # collection order, not biggest scope first: RAY_LAST last

    class RayGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return RayGroupScheduling(config, log)


#: CPU priority (nice) of tests that run beside the real-Ray group under xdist
BESIDE_RAY_NICE = 10


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under xdist, a test outside the real-Ray group (and what it starts: hubs, emulators)
    runs at nice 10, a real-Ray test at nice 0: the slow hub tests use the CPU that Ray's
    boots leave over instead of making them miss their fixed start-up windows. Set before
    the test's fixtures, so module-scoped hubs inherit it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    wanted = 0 if group_of(item.nodeid).startswith("real-ray") else BESIDE_RAY_NICE
    try:
        for tid in os.listdir("/proc/self/task"):  # nice is per thread on Linux; children inherit it
            if os.getpriority(os.PRIO_PROCESS, int(tid)) != wanted:
                os.setpriority(os.PRIO_PROCESS, int(tid), wanted)
    except OSError:
        pass  # raising it back needs root; then the test runs at whatever it has
