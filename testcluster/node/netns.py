"""Pod sandboxes for the process kubelet: a network namespace per pod (or host loopback),
hosts files, network probes and process-tree killing.

Design (see also ``kubelet_process``):

- Each :class:`ProcessKubelet` instance owns one *node network*: a Linux bridge
  ``k8semu<N>`` with address ``10.244.<N>.1/24`` in the root namespace, where ``N``
  (0..254) is taken under an ``flock`` on ``/run/testcluster.rayspawner.test/net-<N>.lock`` so that several
  kubelets (parallel test sessions, other engineers) never share a bridge or a subnet.
  A lock file whose holder died is taken over and the leftovers of that holder
  (netns ``k8semu-<N>-*``, processes inside them, the bridge) are removed first.
- Each pod gets a netns ``k8semu-<N>-<i>``, a veth pair (``k8v<N>p<i>`` on the bridge,
  ``eth0`` inside) with ``10.244.<N>.<i>/24``, ``lo`` up and a default route via the
  bridge. ``net.ipv4.ip_forward`` is 0 in the root namespace here, so nothing from a
  pod is ever routed off the machine; pods reach each other over the bridge and the
  root namespace (the API server, the hub) reaches them through the bridge's route.
- Each container's processes also run in their own UTS and mount namespace (hostname =
  pod name, so Ray's ``platform.node()`` names the pod), built by ``sandbox.py``
  (``containerfs.py`` has the argv): the pod's hosts file over ``/etc/hosts``
  (``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc``, ``<svc>.<ns>``, ``<svc>``, the pod
  name), a resolv.conf with ``nameserver 127.0.0.1`` (unknown names fail at once instead of
  timing out), a private ``/tmp``, ``$HOME`` and working directory, the container's volumes,
  and the node's directories hidden. The test interpreter's environment and the checkout stay
  visible at their paths when they live under /tmp (:func:`host_paths_under_tmp`).
  The hosts file is rewritten in place (same inode), so running containers see updates.
  No ``/etc/netns`` directories are used.
- Pods reach the API server at the ``kubernetes`` Service (``10.96.0.1:443``): a route and a
  DNAT rule in the pod's netns send it to the node's relay (``apirelay.py``); every other
  ClusterIP is unreachable, as kube-proxy rejects a Service without ready endpoints.
- *Why a private /tmp* (measured with ray 2.60 on this machine): two Ray heads in two
  netns sharing one /tmp both start (distinct session dirs), but ``session_latest``
  flips to the last one; a worker node sharing /tmp with its head writes into the
  *head's* session dir (the session name comes from the GCS): one ``sockets/`` and one
  ``logs/`` for both nodes. Other engineers' tests on the machine read /tmp/ray too.
  The kubelet root therefore lives outside /tmp (``/var/tmp``), or the bind would hide it.
- Capability is detected once per process (:func:`netns_available`): create a probe
  netns with a veth pair, delete it. Without it, :class:`LoopbackNetwork` gives every
  pod ``127.0.0.1``: ports collide, so only one pod per port works in that mode.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ..controlplane import API_SERVICE_IP, SERVICE_CIDR

log = logging.getLogger(__name__)

LOCK_DIR = Path("/run/k8semu")
NETNS_DIR = Path("/run/netns")
MAX_NETS = 255

_capability: dict[str, bool] = {}


def host_paths_under_tmp() -> list[Path]:
    """Paths a pod must still see although its private /tmp hides the host's: this
    interpreter's environment (venv, base and exec prefix, the directory of
    ``sys.executable``) and the checkout (the directory holding ``tests/``), when they live
    under /tmp (a CI clone in /tmp/x, a venv in /tmp). Both the path as given and its
    resolved form are kept; nested paths are covered by their parent."""
    checkout = Path(__file__).resolve().parents[2]
    cands = [
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(sys.exec_prefix),
        Path(os.path.dirname(sys.executable)),
        checkout,
    ]
    tmp = Path("/tmp")
    found: set[Path] = set()
    for c in cands:
        for p in (Path(os.path.abspath(c)), c.resolve()):
            if p == tmp:
                log.warning("%s is /tmp itself: not kept visible in pods (their /tmp is private)", c)
            elif p.is_relative_to(tmp) and p.exists():
                found.add(p)
    kept: list[Path] = []
    for p in sorted(found, key=lambda x: len(x.parts)):
        if not any(p.is_relative_to(k) for k in kept):
            kept.append(p)
    return kept


def _run(argv: list[str], check: bool = True, input_: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, input=input_, timeout=30)


def netns_available() -> bool:
    """True if this process can create a netns with a veth pair (tested once, cached)."""
    if "netns" in _capability:
        return _capability["netns"]
    ok = False
    name = f"k8semu-probe-{os.getpid()}"
    veth = f"k8vprobe{os.getpid() % 100000}"
    if os.geteuid() == 0 and shutil.which("ip") and shutil.which("nsenter") and shutil.which("unshare"):
        try:
            _run(["ip", "netns", "add", name])
            try:
                _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name])
                _run(["ip", "link", "del", veth], check=False)
                r = _run(["unshare", "--mount", "--uts", "--propagation", "private", "true"], check=False)
                ok = r.returncode == 0
            finally:
                _run(["ip", "netns", "del", name], check=False)
        except (subprocess.SubprocessError, OSError) as e:
            log.info("netns capability probe failed: %s", e)
    _capability["netns"] = ok
    log.info("network namespaces %s", "available" if ok else "NOT available: loopback fallback")
    return ok


def mountns_available() -> bool:
    """True if ``unshare --mount --uts`` works (private /tmp, hosts file, hostname)."""
    if "mountns" not in _capability:
        ok = False
        if os.geteuid() == 0 and shutil.which("unshare"):
            try:
                ok = (
                    _run(["unshare", "--mount", "--uts", "--propagation", "private", "true"], check=False).returncode
                    == 0
                )
            except (subprocess.SubprocessError, OSError):
                ok = False
        _capability["mountns"] = ok
    return _capability["mountns"]


def netns_pids(netns: str) -> list[int]:
    """Pids of every process whose network namespace is ``netns``."""
    r = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in r.stdout.split() if p.strip().isdigit()]


def kill_netns_processes(netns: str) -> int:
    """SIGKILL every process still living in ``netns``; returns how many were signalled."""
    n = 0
    for pid in netns_pids(netns):
        try:
            os.kill(pid, signal.SIGKILL)
            n += 1
        except ProcessLookupError:
            pass
    return n


def is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def process_tree(pid: int) -> set[int]:
    """``pid``, its descendants and every member of its process group (session leader)."""
    pids: set[int] = set()
    try:
        p = psutil.Process(pid)
        pids = {pid, *(c.pid for c in p.children(recursive=True))}
    except psutil.Error:
        pass
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pid:
                pids.add(proc.pid)
        except OSError:
            continue
    return {p for p in pids if not is_zombie(p)}


def signal_pids(pids: set[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


async def terminate_tree(pid: int, grace: float) -> None:
    """SIGTERM :func:`process_tree` of ``pid``; SIGKILL whatever is left after ``grace`` s."""
    pids = process_tree(pid)
    if not pids:
        return
    signal_pids(pids, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline:
        pids = {p for p in pids | process_tree(pid) if psutil.pid_exists(p) and not is_zombie(p)}
        if not pids:
            return
        await asyncio.sleep(0.1)
    signal_pids(pids | process_tree(pid), signal.SIGKILL)


async def run_captured(argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> tuple[int, str]:
    """Run ``argv`` in its own session; (returncode, stdout+stderr), (-1, ...) on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode or 0, out.decode(errors="replace")
    except asyncio.TimeoutError:
        signal_pids(process_tree(proc.pid), signal.SIGKILL)
        await proc.wait()
        return -1, f"command timed out after {timeout}s"
    except asyncio.CancelledError:
        signal_pids(process_tree(proc.pid), signal.SIGKILL)
        raise


@dataclass
class PodNet:
    """The network of one pod."""

    ip: str
    host_ip: str
    netns: str | None = None  # None in loopback mode
    veth: str | None = None
    index: int = 0
    #: host PID of the sleeping PID 1 that holds the pod's PID namespace (netns mode only)
    pid_holder: int | None = None
    holder_proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def enter_argv(self) -> list[str]:
        """argv prefix that runs a command inside this pod's network (and PID) namespace."""
        if not self.netns:
            return []
        argv = ["nsenter", f"--net={NETNS_DIR / self.netns}"]
        if self.pid_holder:
            argv.append(f"--pid=/proc/{self.pid_holder}/ns/pid")
        return argv


def render_hosts(pod_name: str, pod_ip: str, names: dict[str, str]) -> str:
    """A hosts file: localhost, the pod's own name, then ``names`` (DNS name -> IP) by IP."""
    by_ip: dict[str, list[str]] = {}
    for name, ip in sorted(names.items(), key=lambda kv: (-len(kv[0]), kv[0])):
        by_ip.setdefault(ip, []).append(name)
    lines = ["# k8semu process kubelet", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if pod_ip != "127.0.0.1":
        lines.append(f"{pod_ip}\t{pod_name}")
    lines += [f"{ip}\t{' '.join(ns)}" for ip, ns in sorted(by_ip.items())]
    return "\n".join(lines) + "\n"


async def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """A tcpSocket probe: (success, message)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.close()
        return True, ""
    except (OSError, asyncio.TimeoutError) as e:
        return False, f"dial tcp {host}:{port}: {type(e).__name__}: {e}"


async def http_probe(
    host: str, port: int, path: str, headers: list[dict[str, str]], https: bool, timeout: float
) -> tuple[bool, str]:
    """An httpGet probe like the kubelet's: 200-399 is success; TLS is not verified."""
    ctx = ssl._create_unverified_context() if https else None  # noqa: S323 - probes skip verification
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
        try:
            extra = "".join(f"{x['name']}: {x['value']}\r\n" for x in headers)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\n"
                f"Connection: close\r\n{extra}\r\n".encode()
            )
            line = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
        parts = line.split()
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"
    except (OSError, asyncio.TimeoutError) as e:
        return False, f'Get "http{"s" if https else ""}://{host}:{port}{path}": {type(e).__name__}: {e}'


class LoopbackNetwork:
    """Fallback: every pod is 127.0.0.1 on the host (one pod per port)."""

    mode = "loopback"

    def __init__(self) -> None:
        self.host_ip = "127.0.0.1"

    async def setup(self) -> None:
        log.warning("process kubelet: loopback mode, pods share the host network (one pod per port)")

    async def add_pod(self) -> PodNet:
        return PodNet(ip="127.0.0.1", host_ip="127.0.0.1")

    async def remove_pod(self, net: PodNet) -> None:
        return None

    async def teardown(self) -> None:
        return None


class BridgeNetwork:
    """A bridge per kubelet, a netns + veth per pod (see the module docstring)."""

    mode = "netns"

    def __init__(self, indexes: range | list[int] = range(MAX_NETS)) -> None:
        self.indexes = indexes
        self.n: int | None = None
        self.bridge = ""
        self.host_ip = ""
        #: (host, port) of the `kubernetes` Service relay, set by the kubelet before pods start
        self.api_relay: tuple[str, int] | None = None
        self._lock_fd: int | None = None
        self._free = list(range(2, 255))
        self._pods: dict[str, PodNet] = {}

    # -- node network -------------------------------------------------------------
    async def setup(self) -> None:
        await asyncio.to_thread(self._setup_sync)

    def _setup_sync(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        existing = set(os.listdir("/sys/class/net"))
        for n in self.indexes:
            fd = os.open(LOCK_DIR / f"net-{n}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            bridge = f"k8semu{n}"
            if bridge in existing:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                if holder.isdigit() and not psutil.pid_exists(int(holder)):
                    log.warning("removing leftovers of dead kubelet pid %s on %s", holder, bridge)
                    self._cleanup_index(n)
                if bridge in set(os.listdir("/sys/class/net")):
                    # Not ours to remove (no dead holder recorded): skip the index.
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                    continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._lock_fd, self.n, self.bridge = fd, n, bridge
            self.host_ip = f"10.244.{n}.1"
            self._ip_batch(
                [
                    f"link add {bridge} type bridge",
                    f"addr add {self.host_ip}/24 dev {bridge}",
                    f"link set {bridge} up",
                ]
            )
            log.info("process kubelet network: bridge %s %s/24", bridge, self.host_ip)
            return
        raise RuntimeError(f"no free k8semu network index in {self.indexes}")

    @staticmethod
    def _ip_batch(lines: list[str], check: bool = True, netns: str | None = None) -> None:
        ns = ["-n", netns] if netns else []
        r = _run(["ip", *ns, "-force", "-batch", "-"], check=False, input_="\n".join(lines) + "\n")
        if check and r.returncode != 0:
            raise RuntimeError(f"ip -batch failed ({r.returncode}): {r.stderr.strip()} for {lines}")

    @staticmethod
    def _cleanup_index(n: int) -> None:
        prefix = f"k8semu-{n}-"
        names = sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else []
        for ns in names:
            if ns.startswith(prefix):
                kill_netns_processes(ns)
                _run(["ip", "netns", "del", ns], check=False)
        for ifname in os.listdir("/sys/class/net"):
            if ifname.startswith(f"k8v{n}p"):
                _run(["ip", "link", "del", ifname], check=False)
        _run(["ip", "link", "del", f"k8semu{n}"], check=False)

    async def teardown(self) -> None:
        if self.n is None:
            return
        for net in list(self._pods.values()):
            await self.remove_pod(net)
        await asyncio.to_thread(self._cleanup_index, self.n)
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("process kubelet network %s removed", self.bridge)
        self.n = None

    # -- pods ------------------------------------------------------------------------
    async def add_pod(self) -> PodNet:
        if self.n is None:
            raise RuntimeError("network not set up")
        if not self._free:
            raise RuntimeError(f"no free pod address on {self.bridge}")
        i = self._free.pop(0)
        n = self.n
        net = PodNet(ip=f"10.244.{n}.{i}", host_ip=self.host_ip, netns=f"k8semu-{n}-{i}", veth=f"k8v{n}p{i}", index=i)
        try:
            await asyncio.to_thread(self._add_sync, net)
        except Exception:
            self._free.append(i)
            raise
        self._pods[net.netns or ""] = net
        return net

    def _add_sync(self, net: PodNet) -> None:
        ns = net.netns
        if ns and (NETNS_DIR / ns).exists():  # left by a crash: start clean
            kill_netns_processes(ns)
            _run(["ip", "netns", "del", ns], check=False)
        _run(["ip", "link", "del", str(net.veth)], check=False)
        _run(["ip", "netns", "add", str(ns)])
        try:
            self._ip_batch(
                [
                    f"link add {net.veth} type veth peer name eth0 netns {ns}",
                    f"link set {net.veth} master {self.bridge} up",
                ]
            )
            self._ip_batch(
                [
                    f"addr add {net.ip}/24 dev eth0",
                    "link set lo up",
                    "link set eth0 up",
                    f"route add default via {self.host_ip}",
                    # a ClusterIP whose Service has no ready endpoint: kube-proxy rejects the
                    # connection at once; without one, a SYN to nowhere would hang for minutes
                    f"route add unreachable {SERVICE_CIDR}",
                    *([f"route add {API_SERVICE_IP}/32 via {self.host_ip}"] if self.api_relay else []),
                ],
                netns=ns,
            )
            if self.api_relay:  # kube-proxy's rule for the `kubernetes` Service (apirelay.py)
                host, port = self.api_relay
                _run(
                    ["nsenter", f"--net={NETNS_DIR / str(ns)}", "iptables", "-w", "-t", "nat", "-A", "OUTPUT"]
                    + ["-d", f"{API_SERVICE_IP}/32", "-p", "tcp", "--dport", "443"]
                    + ["-j", "DNAT", "--to-destination", f"{host}:{port}"]
                )
            _start_pid_holder(net)
        except Exception:
            kill_netns_processes(str(ns))
            _run(["ip", "netns", "del", str(ns)], check=False)
            _run(["ip", "link", "del", str(net.veth)], check=False)
            raise

    async def remove_pod(self, net: PodNet) -> None:
        if not net.netns:
            return
        await asyncio.to_thread(self._remove_sync, net)
        self._pods.pop(net.netns, None)
        if net.index not in self._free:
            self._free.append(net.index)

    @staticmethod
    def _remove_sync(net: PodNet) -> None:
        kill_netns_processes(str(net.netns))
        if net.holder_proc is not None:
            try:
                net.holder_proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                net.holder_proc.kill()
                net.holder_proc.wait()
        _run(["ip", "netns", "del", str(net.netns)], check=False)
        if net.veth and Path(f"/sys/class/net/{net.veth}").exists():
            _run(["ip", "link", "del", net.veth], check=False)


def _start_pid_holder(net: PodNet) -> None:
    """Give the pod one PID namespace for all its containers, held by a sleeping PID 1 (the
    pause container's role): what ``shareProcessNamespace: true`` gives a real pod. Ray's
    driver finds its node's raylet by listing processes, so a sandbox that showed every pod's
    raylets would attach a notebook's driver to another pod's node; a real pod sees only its own."""
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net={NETNS_DIR / str(net.netns)}",
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "sleep",
            "infinity",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    net.holder_proc = proc
    for _ in range(500):
        try:
            holders = [c.pid for c in psutil.Process(proc.pid).children(recursive=True) if c.name() == "sleep"]
        except psutil.NoSuchProcess:
            holders = []
        if holders:
            net.pid_holder = holders[0]
            return
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    raise RuntimeError(f"could not create a PID namespace for {net.netns} (unshare --pid exited {proc.poll()})")


def make_network(mode: str = "auto") -> BridgeNetwork | LoopbackNetwork:
    """``auto`` picks ``netns`` when :func:`netns_available`, else ``loopback``."""
    if mode == "auto":
        mode = "netns" if netns_available() else "loopback"
    if mode == "netns":
        return BridgeNetwork()
    if mode == "loopback":
        return LoopbackNetwork()
    raise ValueError(f"unknown network mode {mode!r}")
