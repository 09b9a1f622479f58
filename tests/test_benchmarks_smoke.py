"""The spawn benchmark harness at tiny scale: it runs, and its JSON has every field with sane values.

It runs on the session's test cluster (``test_cluster``: the one scripts/test.sh started, never a
second one), one namespace per phase. Not a timed test: no assertion on latencies or ratios
(see benchmarks/README.md for numbers).
"""

from __future__ import annotations

import json

import pytest

from benchmarks import spawn_bench

DIST = {"n", "p50", "p95", "p99", "max", "mean"}
SUMMARY_FIELDS = {
    "kind",
    "users",
    "reps",
    "servers",
    "spawn_s",
    "floor_s",
    "overhead_s",
    "head_ready_after_notebook_s",
    "stop_s",
    "teardown_s",
    "teardown_not_done",
    "requests_per_server",
    "requests_per_server_by_verb",
    "reflector_requests_during_phase",
    "warmup_requests",
    "watches_peak",
    "cpu_s_per_spawn",
    "cpu_s_per_spawn_by_rep",
    "api_cpu_s_per_spawn",
    "apiserver_cpu_s_per_spawn",
    "rss_peak_mb",
    "rss_growth_mb",
    "errors",
    "error_samples",
    "spawn_phase_s",
    "load",
    "hub_loop_lag_p99_s",
    "hub_loop_lag_max_s",
    "hub_cpu_utilization",
}
RATIO_FIELDS = {
    "users",
    "spawn_p50",
    "spawn_p95",
    "spawn_p99",
    "spawn_mean",
    "floor_mean",
    "cpu_per_spawn",
    "rss_peak",
    "rss_growth",
}


@pytest.mark.slow  # two hub processes and two namespaces' spawns: about 30 s
@pytest.mark.timeout(240)
def test_spawn_bench_tiny(tmp_path, capsys, monkeypatch, test_cluster):
    # the bench and its child processes use this cluster (they start their own only without one)
    monkeypatch.setenv("RAYSPAWNER_TESTCLUSTER_DIR", str(test_cluster.root))
    out = tmp_path / "bench.json"
    rc = spawn_bench.main(
        [
            "--users",
            "3",
            "--reps",
            "1",
            "--out",
            str(out),
            "--hold",
            "0.2",
            "--jitter",
            "0.05",
            "--sim-delays",
            json.dumps({"pull": 0.15, "start": 0.05}),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ratio ray/plain" in printed and "plain" in printed and "ray" in printed

    data = json.loads(out.read_text())
    for key in ("date", "command", "machine", "versions", "config", "by_kind", "ratios", "phases"):
        assert key in data, key
    assert data["machine"]["nproc"] >= 1 and data["machine"]["cpu"] is not None
    assert data["config"]["ray_profile"] == {"profile": "ray", "workers": "2"}
    assert set(data["by_kind"]) == {"plain/3", "ray/3"}

    for key, s in data["by_kind"].items():
        assert SUMMARY_FIELDS <= set(s), SUMMARY_FIELDS - set(s)
        assert s["errors"] == 0, s["error_samples"]
        assert s["servers"] == 3 and s["spawn_s"]["n"] == 3
        for d in ("spawn_s", "floor_s", "overhead_s", "stop_s", "teardown_s"):
            assert DIST <= set(s[d]), (key, d)
        assert 0 < s["spawn_s"]["p50"] <= s["spawn_s"]["p95"] <= s["spawn_s"]["p99"] <= s["spawn_s"]["max"] < 60
        assert s["floor_s"]["n"] == 3 and s["floor_s"]["mean"] > 0
        assert s["teardown_s"]["n"] == 3 and s["teardown_not_done"] == 0 and s["teardown_s"]["max"] < 60
        assert s["cpu_s_per_spawn"] > 0 and s["rss_peak_mb"] > 0 and s["rss_growth_mb"] >= 0
        # the control plane's CPU for the phase, the API server's part of it included
        assert 0 < s["apiserver_cpu_s_per_spawn"] <= s["api_cpu_s_per_spawn"]
        assert s["watches_peak"] >= 2
        assert s["warmup_requests"].get("list pods", 0) >= 1  # the one-off reflector start, reported apart

    plain, ray = data["by_kind"]["plain/3"], data["by_kind"]["ray/3"]
    assert plain["requests_per_server_by_verb"] == {"create pods": 1.0, "delete pods": 1.0}
    assert ray["requests_per_server_by_verb"]["create pods"] == 2.0  # notebook + head
    assert ray["requests_per_server"] > plain["requests_per_server"]
    assert ray["head_ready_after_notebook_s"]["n"] == 3 and plain["head_ready_after_notebook_s"] is None
    assert ray["watches_peak"] == plain["watches_peak"] + 1  # the shared Ray-pods watch, not one per user

    (r,) = data["ratios"]
    assert RATIO_FIELDS <= set(r) and r["users"] == 3
    assert all(r[k] > 0 for k in RATIO_FIELDS - {"users"})
    assert len(data["phases"]) == 2 and {p["kind"] for p in data["phases"]} == {"plain", "ray"}
    for p in data["phases"]:
        assert {"kube-apiserver", "etcd", "node-agent-sim"} <= set(p["api_cpu_s_by_process"]), p["api_cpu_s_by_process"]
    assert data["config"]["backend"] == "pods"


# --- benchmarks/connect_modes_bench.py: no Ray, no hub, no pods (a real run is minutes; see benchmarks/README.md)


def _fake_sample(mode: str, rep: int, smoke: float, init: float, data: float | None) -> dict:
    return {
        "mode": mode,
        "rep": rep,
        "init_s": init,
        "smoke_s": smoke,
        "put_get_s": 0.1,
        "put_to_worker_s": 0.2,
        "data_s": data,
        "process_s": 5.0,
        "errors": {} if data else {"data": "AttributeError: core_worker"},
    }


def test_connect_modes_bench_scripts_and_report(tmp_path):
    from benchmarks import connect_modes_bench as cmb

    compile(cmb.DRIVER, "driver", "exec")
    compile(cmb.FIRST_RESULT, "first_result", "exec")
    assert cmb.parse_result('noise\nRESULT {"a": 1}\nRESULT {"a": 2}\ntrailer') == {"a": 2}
    assert cmb.parse_result("no result here") is None

    samples = {
        "driver": [_fake_sample("driver", r, 2.2, 0.05, 4.0) for r in range(3)],
        "client": [_fake_sample("client", r, 3.0, 5.0, None) for r in range(3)],
        "head": [_fake_sample("head", r, 2.0, 0.04, 3.0) for r in range(3)],
    }
    ratios = cmb.ratios(samples)
    assert abs(ratios["smoke:driver/head"]["median_of_medians"] - 1.1) < 1e-9
    assert ratios["smoke:driver/head"]["per_repeat"]["n"] == 3
    assert ratios["data:client/head"]["median_of_medians"] is None  # every client Ray Data run failed
    data = {
        "config": {"repeats": 3},
        "k8s": {
            "summary": {m: cmb.summarize(s, cmb.STEPS) for m, s in samples.items()},
            "ratios": ratios,
            "error_samples": {"client": {"data": "AttributeError: core_worker"}},
        },
        "local": {
            "driver": {
                "summary": cmb.summarize(
                    [{"click_to_first_result_s": 40.0, "spawn_s": 30.0}], ("click_to_first_result", "spawn")
                ),
                "errors": [],
            }
        },
    }
    data["targets"] = cmb.targets(data)
    assert data["targets"]["driver_init_median_le_0.2s"] == {"value": 0.05, "met": True}
    assert data["targets"]["smoke_driver_over_head_le_1.1"]["met"] is True
    text = cmb.table(data)
    assert "FAILED" in text and "core_worker" in text and "click→first result median 40.0s" in text


def test_connect_modes_bench_cleanup_finds_its_processes(tmp_path):
    """The local part's teardown finds what its hub left behind by marker, temp root or HOME."""
    import os
    import subprocess
    import sys

    from benchmarks import connect_local as cmb

    hub = cmb.LocalHub(tmp_path, "driver", "run-123")
    procs = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, **extra})
        for extra in (
            {cmb.BENCH_MARKER: "run-123"},
            {"RAYSPAWNER_TEMP_ROOT": hub.temp_root},
            {"HOME": str(hub.state / "home" / "bench")},
            {cmb.BENCH_MARKER: "another-run"},
        )
    ]
    try:
        import time

        time.sleep(0.2)
        found = {p.pid for p in hub.leftovers()}
        assert {p.pid for p in procs[:3]} <= found and procs[3].pid not in found
        assert hub.stop() >= 3  # no hub process was started: it kills only the leftovers
        assert all(p.wait(10) is not None for p in procs[:3]) and procs[3].poll() is None
    finally:
        for p in procs:
            p.kill()
            p.wait()
