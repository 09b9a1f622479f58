"""``python -m testcluster.node --dir DIR --mode sim|process [--name NAME]``: run the node agent.

Started by ``python -m testcluster up``; runs until SIGTERM, then stops every pod and removes
every network namespace, veth, bridge and directory that its pods used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path
from urllib.parse import urlsplit

from ..controlplane import free_ports
from ..kubeconfig import ssl_context
from ..pki import Pki
from .agent import NodeAgent
from .apiclient import Api
from .kubelet_server import KubeletServer
from .services import ServiceIndex

DEFAULT_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "5000", "ephemeral-storage": "500Gi"}
#: the sim node runs no processes and stands for a whole cluster's nodes: room for the
#: benchmarks' 500 Ray servers (notebook, head and worker each) at the spawner's default sizes
SIM_CAPACITY = {"cpu": "4000", "memory": "16Ti", "pods": "10000", "ephemeral-storage": "50Ti"}


def make_runtime(mode: str, root: Path, cluster_dir: Path, server: str):  # noqa: ANN201 - a Kubelet
    if mode == "sim":
        from .kubelet_sim import SimKubelet  # noqa: PLC0415

        return SimKubelet()
    from .kubelet_process import ProcessKubelet  # noqa: PLC0415

    api = urlsplit(server)
    # probe delays and periods as written (time_scale 1), as a kubelet honours them; the
    # cluster's directory (keys, kubeconfigs, PersistentVolume paths) is the node's, not a pod's
    return ProcessKubelet(
        root_dir=root / "pods",
        time_scale=1.0,
        hide_paths=[cluster_dir],
        api_server=(str(api.hostname), int(api.port or 443)),
    )


async def main_async(args: argparse.Namespace) -> None:
    root = Path(args.dir)
    state = json.loads((root / "state.json").read_text())
    pki = Pki(root / "pki")
    client = pki.issue(f"node-{args.name}", f"system:node:{args.name}", ("system:nodes",))
    serving = pki.issue(f"kubelet-{args.name}", args.name, dns=(args.name,), ips=("127.0.0.1",), server=True)
    capacity = dict(SIM_CAPACITY if args.mode == "sim" else DEFAULT_CAPACITY)
    if args.gpus:
        capacity["nvidia.com/gpu"] = str(args.gpus)
    agent = NodeAgent(
        Api(state["server"], ssl_context(pki.ca.cert, client)),
        make_runtime(args.mode, root / f"node-{args.name}", root, state["server"]),
        args.name,
        free_ports(1)[0],
        capacity,
        labels={"testcluster.rayspawner.test/pods": args.mode},
    )
    # only the API server (its kubelet-client certificate, signed by the cluster CA) may call in
    agent.server = KubeletServer(
        agent,
        agent.kubelet_port,
        (serving.cert, serving.key, pki.ca.cert),
        Path(state["bin"]) / "kubelet-streams",
        root / f"node-{args.name}.sock",
    )
    if args.mode == "process":  # its pods resolve Service names (the sim's open no connections)
        agent.hosts = ServiceIndex(agent.api)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.run()
    (root / f"node-{args.name}.ready").write_text("ok")
    await stop.wait()
    await agent.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m testcluster.node")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", choices=("sim", "process"), default="process")
    ap.add_argument("--name", default="node-1")
    ap.add_argument("--gpus", type=int, default=0, help="advertise this many nvidia.com/gpu")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
