"""CLI: ``python -m tests.k8semu serve --port PORT --kubeconfig PATH [--kuberay] [--kubelet sim|process]``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import yaml

from . import K8sEmu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.k8semu", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve until killed")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--kubeconfig", required=True, help="path of the kubeconfig to write")
    s.add_argument("--kuberay", action="store_true", help="serve ray.io/v1 rayclusters and simulate KubeRay")
    s.add_argument("--kubelet", choices=["sim", "process"], default="sim")
    s.add_argument("--rbac", nargs="*", default=None, metavar="FILE", help="RBAC YAML files (turns on RBAC mode)")
    s.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN=USER",
        help="bearer token for a user, e.g. hub-token=system:serviceaccount:jhub:hub",
    )
    s.add_argument("--sim-delays", default=None, help='YAML/JSON map, e.g. \'{"schedule": 0.5, "pull": 1}\'')
    s.add_argument("--jitter", type=float, default=0.0)
    s.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    tokens = dict(t.split("=", 1) for t in a.token) if a.token else None
    if a.rbac is not None and tokens is None:
        tokens = {}
    try:
        emu = K8sEmu(
            kuberay=a.kuberay,
            kubelet=a.kubelet,
            rbac_files=a.rbac or None,
            tokens=tokens,
            sim_delays=yaml.safe_load(a.sim_delays) if a.sim_delays else None,
            jitter=a.jitter,
            port=a.port,
            kubeconfig_path=a.kubeconfig,
        )
        emu.start()
    except RuntimeError as e:
        print(f"k8semu: {e}", file=sys.stderr)
        return 2
    print(f"k8semu serving on {emu.url}; kubeconfig {emu.kubeconfig_path}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
