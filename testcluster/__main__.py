"""``python -m testcluster up --dir DIR [--kuberay] [--node process|sim]`` / ``down --dir DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cluster import down, up


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testcluster", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start a cluster; returns once it is ready (DIR/kubeconfig is cluster-admin)")
    u.add_argument("--dir", required=True, type=Path)
    u.add_argument("--kuberay", action="store_true", help="also run the KubeRay operator")
    u.add_argument(
        "--node",
        choices=("process", "sim"),
        action="append",
        help="a node agent with this pod runtime (default process; give it twice for both)",
    )
    d = sub.add_parser("down", help="stop everything 'up' started and remove DIR")
    d.add_argument("--dir", required=True, type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            up(args.dir, kuberay=args.kuberay, nodes=tuple(dict.fromkeys(args.node or ["process"])))
        else:
            down(args.dir)
    except RuntimeError as e:
        print(f"testcluster: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
