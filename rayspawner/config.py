"""Configuration shared by every rayspawner spawner (Kubernetes and local).

Each ``ray_*`` trait can be set in ``jupyterhub_config.py`` (``c.RaySpawner.x``
or ``c.LocalRaySpawner.x``) and per profile through ``kubespawner_override``.
Values a user can choose (worker count, sizes, image) accept strings as well
as numbers, because profile options and the REST API deliver strings; they are
parsed and checked against the ``ray_max_*`` limits in
:mod:`rayspawner.options`, which raises a user-facing error before anything is
created.
"""

from __future__ import annotations

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Unicode, Union, validate
from traitlets.config import Configurable

from .naming import check_template
from .netpeers import DEFAULT_DNS_PEERS, check_cidrs, check_peers
from .versions import RAY_VERSION

_Number = lambda default, help: Union([Int(), Float(), Unicode()], default_value=default, help=help, config=True)  # noqa: E731


class RayConfig(Configurable):
    """The ``ray_*`` settings (a mixin for the spawners)."""

    ray_enabled = Bool(
        False,
        config=True,
        help="""Start a Ray cluster (a head and a worker pool) next to this server.

        Usually left False globally and set True by a profile's
        ``kubespawner_override`` (e.g. the profile with slug ``ray``).
        """,
    )
    ray_backend = CaselessStrEnum(
        ["auto", "pods", "kuberay"],
        default_value="auto",
        config=True,
        help="""How the Ray cluster is created on Kubernetes.

        ``pods``: plain Pods/Deployment/Service, no operator needed.
        ``kuberay``: a ``ray.io/v1`` RayCluster (needs the KubeRay operator; supports autoscaling).
        ``auto``: KubeRay when the API server serves ``rayclusters.ray.io``, else ``pods``.
        Ignored by LocalRaySpawner.
        """,
    )
    ray_cluster_name_template = Unicode(
        "ray-{user_server}",
        config=True,
        help="""Name of each user-server's Ray cluster: ``{user_server}`` (KubeSpawner's
        ``user--server``; ``{username}--{servername}`` means the same) exactly once, with
        fixed text of lowercase letters, digits and single hyphens. Anything else is refused
        when the configuration is loaded: ``ray-{username}-{servername}`` would give user
        ``alice-x`` the cluster of alice's server ``x``. Names that need escaping, or longer
        than 40 characters, become a readable prefix, ``---`` and an 80-bit hash.""",
    )

    @validate("ray_cluster_name_template")
    def _check_cluster_name_template(self, proposal):
        # refused where the setting is made (config, profile override), before any spawn
        return check_template(proposal["value"])

    ray_image = Unicode(
        "",
        config=True,
        help="""Container image of the Ray head and workers. Empty (the default): the
        notebook's own image, so Ray and Python versions match by construction. If set,
        versions are compared at start (see ``ray_version_check``).""",
    )
    ray_image_pull_policy = Unicode(
        "",
        config=True,
        help="imagePullPolicy of the Ray pods (Always, IfNotPresent, Never); empty: the notebook's.",
    )
    ray_version = Unicode(
        RAY_VERSION,
        config=True,
        help="Ray version of the cluster image, written to the RayCluster's rayVersion (KubeRay).",
    )
    ray_version_check = CaselessStrEnum(
        ["error", "warn", "off"],
        default_value="error",
        config=True,
        help="""When ``ray_image`` differs from the notebook image, compare the Ray and
        Python versions of both images at start: ``error`` fails the spawn with a message
        naming both versions, ``warn`` shows a warning in the spawn progress, ``off`` skips.""",
    )
    ray_connect_mode = CaselessStrEnum(
        ["driver", "client"],
        default_value="driver",
        config=True,
        help="""How the notebook's ``ray.init()`` reaches its cluster.

        ``driver`` (the default): the notebook joins its own cluster as a Ray node that
        offers no resources (0 CPU, 0 GPU; label ``rayspawner/role=notebook``), run by a
        native sidecar container in the notebook pod from the notebook's own image, and
        ``RAY_ADDRESS`` is the head's GCS address (``<cluster>-head-svc...:6379``), so the
        kernel is a direct driver: ``ray.init()`` is instant and Ray Data, Train and Tune
        work. Needs the same Ray and Python versions on both sides, and Kubernetes >= 1.29
        (native sidecars). In local mode the kernel attaches to its local cluster directly.

        ``client``: ``RAY_ADDRESS=ray://<cluster>-head-svc...:10001`` (Ray Client), the
        fallback. Ray Data does not work through Ray Client, and connecting is slower.
        """,
    )
    ray_notebook_object_store_memory = Unicode(
        "256Mi",
        config=True,
        help="""Driver mode: object store of the notebook's own Ray node (kept in the notebook
        pod's /dev/shm). It counts against the notebook's memory limit, and holds what the
        kernel ``ray.put``s and the results it fetches. At least 80Mi (Ray's minimum).""",
    )
    ray_cluster_domain = Unicode(
        "cluster.local",
        config=True,
        help="The Kubernetes cluster DNS domain used in RAY_ADDRESS.",
    )

    # --- sizes (user-choosable through profile options) ---
    ray_head_cpu = _Number("1", "CPU of the Ray head (limit = request), e.g. 1 or 500m. The head also runs tasks.")
    ray_head_memory = _Number(
        "2Gi", "Memory of the Ray head, e.g. 2Gi. ``ray_object_store_fraction`` of it is the object store (/dev/shm)."
    )
    ray_head_gpu = _Number(0, "GPUs of the Ray head (usually 0).")
    ray_worker_replicas = _Number(1, "Number of Ray workers (fixed size, or the initial size when autoscaling).")
    ray_worker_min_replicas = _Number(
        "", "Autoscaling lower bound (KubeRay backend only); empty = ray_worker_replicas."
    )
    ray_worker_max_replicas = _Number(
        "",
        "Autoscaling upper bound (KubeRay backend only); empty = ray_worker_replicas. "
        "Autoscaling is on when min < max.",
    )
    ray_worker_cpu = _Number("1", "CPU of each Ray worker, e.g. 2 or 1500m.")
    ray_worker_memory = _Number("2Gi", "Memory of each Ray worker, e.g. 4Gi.")
    ray_gpu_worker_replicas = _Number(0, "Number of GPU workers, a separate worker group (``gpu-workers``); 0 = none.")
    ray_gpu_worker_gpus = _Number(1, "GPUs per GPU worker.")
    ray_gpu_resource_name = Unicode("nvidia.com/gpu", config=True, help="Extended resource name requested for GPUs.")
    ray_object_store_fraction = Float(
        0.3, config=True, help="Fraction of each Ray node's memory used as object store (a memory-backed /dev/shm)."
    )

    # --- autoscaling (KubeRay) ---
    ray_autoscaler_idle_timeout_seconds = Int(
        60, config=True, help="Seconds an idle worker is kept before the autoscaler removes it (KubeRay)."
    )
    ray_autoscaler_upscaling_mode = CaselessStrEnum(
        ["Default", "Aggressive", "Conservative"],
        default_value="Default",
        config=True,
        help="KubeRay autoscalerOptions.upscalingMode.",
    )

    # --- scheduling and extras ---
    ray_node_selector = Dict(config=True, help="nodeSelector of the Ray pods.")
    ray_tolerations = List(config=True, help="Tolerations of the Ray pods (list of Kubernetes Toleration dicts).")
    ray_extra_env = Dict(config=True, help="Extra environment variables (name → string) for Ray head and workers.")
    ray_volumes = List(config=True, help="Extra volumes (Kubernetes Volume dicts) for Ray pods.")
    ray_volume_mounts = List(config=True, help="Extra volumeMounts for the Ray containers.")
    ray_extra_labels = Dict(config=True, help="Extra labels on every Ray object.")
    ray_extra_annotations = Dict(
        config=True, help="Extra annotations on the Ray pods (e.g. for Prometheus scraping of port 8080)."
    )

    # --- lifecycle ---
    ray_wait_for_head = Bool(
        True,
        config=True,
        help="""Return from start only when the Ray head accepts clients (as well as the
        notebook being ready) and, in driver mode, the notebook's own Ray node has joined,
        so the first ``ray.init()`` works at once. On Kubernetes workers never block the start
        (they join as they get scheduled); in local mode, where they boot in seconds on the
        hub's machine, every requested worker must have joined. False:
        return as soon as the notebook is ready; the notebook's node joins when it can.""",
    )
    ray_stop_timeout = Int(60, config=True, help="Seconds stop waits for every Ray object of the server to be gone.")
    ray_head_restart_limit = Int(
        3,
        config=True,
        help="""How many times poll() recreates a Ray head that vanished behind the hub's
        back before reporting the server as failed (which stops it).""",
    )

    ray_orphan_sweep_interval = Int(
        300,
        config=True,
        help="""Seconds between orphan sweeps (0 disables): the hub deletes rayspawner-labelled
        objects whose notebook pod is gone, or that have no owner (a hub crash mid-spawn).
        The sweep starts once Ray is in use in this hub process: a Ray spawn, a stored server
        with a Ray cluster (at start-up), or a server whose profile can enable Ray; a hub
        without Ray profiles makes only KubeSpawner's own API requests. Objects not labelled
        managed-by=rayspawner are never touched.""",
    )
    ray_orphan_grace_seconds = Int(
        120, config=True, help="Objects younger than this are never swept (a spawn may be in progress)."
    )
    ray_orphan_sweep_secrets = CaselessStrEnum(
        ["list", "by-name"],
        default_value="list",
        config=True,
        help="""How token Secrets are kept from outliving their notebook, and so whether the
        hub's Role needs ``list`` on secrets (which reads every Secret in the namespace).
        "list": the token Secret is created just before the notebook pod and made owned by it
        once the pod exists; a hub that dies in between leaves an ownerless Secret, which the
        sweep finds by listing Secrets labelled managed-by=rayspawner. "by-name": Secrets are
        never listed. The token Secret is created only once the notebook pod exists, owned by
        it from the start, so Kubernetes' garbage collector removes it with the pod whenever
        the hub dies; the sweep deletes ``<cluster>-ray-token`` by name for each cluster whose
        other objects it finds orphaned. The Role then needs only get, create and delete on
        secrets (``jupyterhub_config/rbac/role-pods-secrets-by-name.yaml``). The notebook
        container waits for its Secret (the kubelet retries CreateContainerConfigError),
        which can add a few seconds to a spawn.""",
    )

    # --- security ---
    ray_auth_enabled = Bool(
        True,
        config=True,
        help="""Ray token authentication (Ray >= 2.52): a random token per cluster in a
        Secret, delivered to head, workers and notebook via secretKeyRef. Disable only
        for older Ray images; without it anyone reaching the Ray ports can run code.""",
    )
    ray_network_policy_enabled = Bool(
        True,
        config=True,
        help="Create a NetworkPolicy per cluster admitting only that cluster's pods and its notebook.",
    )
    ray_network_policy_extra_ingress = List(
        config=True,
        help="""Extra NetworkPolicy ingress rules (Kubernetes NetworkPolicyIngressRule dicts)
        for the Ray pods, e.g. a Prometheus namespace on port 8080.""",
    )
    ray_network_policy_extra_egress = List(
        config=True,
        help="""Extra NetworkPolicy egress rules for the Ray pods (DNS and traffic within the
        cluster are always allowed), e.g. a package index for runtime_env.""",
    )

    ray_network_policy_dns_peers = List(
        default_value=[dict(p) for p in DEFAULT_DNS_PEERS],
        config=True,
        help="""Where the Ray pods may send DNS (UDP/TCP 53 and 5353): a list of Kubernetes
        NetworkPolicyPeer dicts (podSelector, namespaceSelector, ipBlock). The default names
        kube-dns/CoreDNS (namespace kube-system, pods ``k8s-app: kube-dns``) and OpenShift's
        DNS (namespace openshift-dns, pods ``dns.operator.openshift.io/daemonset-dns: default``);
        nothing else is reachable on those ports, so DNS cannot carry data out to any host.
        Add your cluster's resolver if it differs, e.g. a node-local cache:
        ``{"ipBlock": {"cidr": "169.254.20.10/32"}}``. Must not be empty (in a NetworkPolicy
        an empty peer list means *any* destination).""",
    )

    @validate("ray_network_policy_dns_peers")
    def _check_dns_peers(self, proposal):
        return check_peers(proposal["value"], "ray_network_policy_dns_peers")

    ray_autoscaler_api_server_cidrs = List(
        Unicode(),
        config=True,
        help="""KubeRay autoscaling: the API server's addresses (CIDRs such as
        ``10.0.0.1/32``; the ``kubernetes`` Service's ClusterIP and the endpoints of
        ``kubectl get endpoints kubernetes -n default``) that the autoscaler sidecar may reach
        on TCP 443/6443. The egress is in a NetworkPolicy of its own, ``<cluster>-apiserver``,
        that selects only the head pod (where the sidecar runs). Empty (the default): the head
        may reach any address on those two ports; workers never can.""",
    )

    @validate("ray_autoscaler_api_server_cidrs")
    def _check_api_server_cidrs(self, proposal):
        return check_cidrs(proposal["value"], "ray_autoscaler_api_server_cidrs")

    # --- admin limits: no profile, option or API request can exceed these ---
    ray_max_workers = Int(8, config=True, help="Limit: Ray workers per cluster (all groups, at their maximum).")
    ray_max_worker_cpu = Unicode("8", config=True, help="Limit: CPU per Ray worker or head.")
    ray_max_worker_memory = Unicode("32Gi", config=True, help="Limit: memory per Ray worker or head.")
    ray_max_worker_gpu = Int(1, config=True, help="Limit: GPUs per Ray node.")
    ray_max_total_cpu = Unicode("32", config=True, help="Limit: CPU of one user's cluster, head + workers at maximum.")
    ray_max_total_memory = Unicode(
        "128Gi", config=True, help="Limit: memory of one user's cluster, head + workers at maximum."
    )
    ray_max_total_gpu = Int(4, config=True, help="Limit: GPUs of one user's cluster.")
    ray_allowed_images = List(
        Unicode(),
        config=True,
        help="""Limit: images the Ray cluster may use (exact names or fnmatch patterns such as
        ``quay.io/myorg/ray:*``). Empty: any well-formed image (the notebook image is always allowed).""",
    )
    ray_allowed_images_regex = Unicode(
        "",
        config=True,
        help="Limit: a regular expression Ray images must fully match (in addition to ray_allowed_images).",
    )

    # --- per-user totals across all of a user's active Ray servers (rayspawner.quotas) ---
    ray_user_max_clusters = Int(
        None,
        allow_none=True,
        config=True,
        help="""Limit: Ray clusters one user may hold at once across all their servers (named
        servers included; pending, running and stopping servers count). None: no limit. A spawn
        over it is refused before anything is created, naming the servers in use.""",
    )
    ray_user_max_total_cpu = Union(
        [Int(), Float(), Unicode()],
        default_value=None,
        allow_none=True,
        config=True,
        help="""Limit: CPU of all of one user's Ray clusters together (each counted head +
        workers at their maximum), e.g. 16 or 16000m. None: no limit.""",
    )
    ray_user_max_total_memory = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""Limit: memory of all of one user's Ray clusters together (head + workers at
        their maximum), e.g. 64Gi. None: no limit.""",
    )
    ray_user_max_total_gpu = Int(
        None,
        allow_none=True,
        config=True,
        help="Limit: GPUs of all of one user's Ray clusters together. None: no limit.",
    )
    ray_user_group_limits = Dict(
        config=True,
        help="""Per-user totals by JupyterHub group: ``{group: {"clusters": n, "cpu": "16",
        "memory": "64Gi", "gpu": n}}`` (any subset; None there means no limit). A key a group
        sets replaces the ``ray_user_max_*`` setting for its members, so a group can raise or
        lower it; when several of a user's groups set the same key, the most generous value
        wins. Unknown keys or bad quantities are refused when the configuration is loaded.""",
    )

    @validate("ray_user_group_limits")
    def _check_group_limits(self, proposal):
        from .quotas import check_group_limits  # quotas needs no config: no import cycle at load

        return check_group_limits(proposal["value"])
