"""Shared pytest configuration."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["testcluster.fixtures", "tests.spawner_fixtures", "tests.local_hub"]

#: modules whose tests boot real Ray clusters. Under pytest-xdist (``--dist loadgroup``) they run
#: on one worker, one test after another ("real-ray"): two Ray tests at once on 2 cores made
#: Ray miss its fixed start-up windows (a worker restarted twice, a head retried). Every other
#: test runs beside them at a lower CPU priority (see pytest_runtest_setup).
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


#: modules whose cases each run many spawn+stops under injected API faults: one worker runs them
#: one after another (in the quick and in the slow phase), so they never load the machine
#: together (four at once once pushed a stop past its bound)
SERIAL_MODULES = {"test_reliability_faults"}


#: real-Ray modules collected last (so run last in their group, once the niced tests beside
#: them are done), in this order: they boot the most Ray nodes at once
RAY_LAST = ("test_local_backend", "test_e2e_kubernetes")


def _module(item: pytest.Item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: RAY_LAST.index(_module(item)) + 1 if _module(item) in RAY_LAST else 0)


def group_of(nodeid: str) -> str:
    """The xdist scope of a test: "real-ray" for the real-Ray modules, the module for the
    serial ones, else the test itself (spread over the workers like ``--dist load``).
    xdist starts the biggest scope first; a scope runs in collection order."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    if module in REAL_RAY_MODULES:
        return "real-ray"
    if module in SERIAL_MODULES:
        return module
    return nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` scheduled by :func:`group_of`. xdist's own loadgroup marks node ids
    with an ``@group`` suffix, which pytest 9.2 ignores (it keeps the id in ``Node._id``):
    every test would be spread over the workers, two Ray clusters booting at once."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

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
    wanted = 0 if _module(item) in REAL_RAY_MODULES else BESIDE_RAY_NICE
    try:
        for tid in os.listdir("/proc/self/task"):  # nice is per thread on Linux; children inherit it
            if os.getpriority(os.PRIO_PROCESS, int(tid)) != wanted:
                os.setpriority(os.PRIO_PROCESS, int(tid), wanted)
    except OSError:
        pass  # raising it back needs root; then the test runs at whatever it has
