"""``mammobench doctor``: the pre-flight of a cluster launch, so that it fails in the first minute.

One ``Check`` per line (PASS / WARN / FAIL, with the fix): the Ray cluster (reachable, its
nodes, what an autoscaler can add, Ray and Python versions on every node), then, from a Ray task
on a worker node, the storage path, the tracking server, reading DATA and writing where it is
prepared (``doctor_data``); the data's catalog and prepared
shards; every pretrained row's weights; with ``--gpu``, each study architecture on a GPU worker.
The probes live in ``doctor_checks`` and ``doctor_gpu``; this module connects and runs them.
"""

from __future__ import annotations

import json
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.settings import Settings

if TYPE_CHECKING:
    from search_spaces.benchmarks import Benchmark

STATUSES = ("PASS", "WARN", "FAIL")
PROBE_TIMEOUT_S = 3.0  # a GCS that does not answer a TCP connect in this is not there
TASK_TIMEOUT_S = 180.0  # a probe task: scheduling, a fresh worker, its imports
CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"
GCS_PORT, CLIENT_PORT = 6379, 10001  # Ray's defaults: ``ray start --head``, ``ray://``


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, and how to fix it."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def line(self) -> str:
        """``STATUS name: detail (fix: ...)``, as the console shows it."""
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{self.status} {self.name}: {self.detail}{fix}"


@dataclass(frozen=True)
class DoctorJob:
    """What to check: the cluster, storage and store of ``settings``, and the rest if given."""

    settings: Settings
    config: str = "study"  # the benchmark whose rows, sizes and data are checked
    data: str | None = None  # a folder or a URI
    weights_dir: str | None = None
    prep: str | None = None  # where the benchmark prepares DATA [default: <home>/prepared/...]
    gpu: bool = False


def run_doctor(job: DoctorJob, echo: Callable[[str], None] = print) -> list[Check]:
    """Run every check, echoing each line as it is known; returns them all."""
    from data_pipeline import TASKS
    from data_pipeline.storage import location_text
    from models import available_models
    from orchestration.doctor_checks import (
        data_checks,
        probe_node,
        storage_check,
        tracking_checks,
        weights_checks,
    )
    from orchestration.doctor_data import data_access_checks
    from orchestration.doctor_gpu import gpu_checks
    from search_spaces.benchmarks import load_benchmark

    registry = {model: task for task in TASKS for model in available_models(task)}
    bench = load_benchmark(job.config, registry)
    found: list[Check] = []

    def emit(checks: list[Check]) -> None:
        for check in checks:
            echo(check.line())
            found.append(check)

    cluster = ray_checks(job.settings.address, bench)
    emit(cluster.checks)
    if cluster.up:
        node = probe_node()
        emit([storage_check(job.settings.storage, node)])
        emit(tracking_checks(job.settings, node))
    prep = location_text(job.prep or job.settings.home / "prepared" / bench.name)
    if cluster.up and job.data is not None:
        emit(data_access_checks(location_text(job.data), prep, node))
    emit(data_checks(job.data, bench, prep))
    if cluster.up:
        emit(weights_checks(job.weights_dir, bench, node))
        if job.gpu:
            emit(gpu_checks(bench, cluster.gpus, cluster.can_add_gpus))
    else:
        skipped = "storage, tracking, weights" + (" and gpu" if job.gpu else "")
        emit([Check("doctor", "WARN", f"{skipped} not checked: they run on the cluster")])
    return found


@dataclass(frozen=True)
class Cluster:
    """What the Ray checks found: their lines, and what the later checks need to know."""

    checks: list[Check]
    up: bool = False
    gpus: float = 0.0
    can_add_gpus: bool = False


def ray_checks(address: str | None, bench: Benchmark) -> Cluster:
    """Connect (fast failure on an address nothing listens on), then the cluster's nodes, what
    it can add, whether the config's trials fit, and the versions on every node."""
    import ray

    connected = connect_ray(address)
    if connected.status == "FAIL":
        return Cluster([connected])
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    nodes = [n for n in ray.nodes() if n["Alive"]]
    counts = f"{len(nodes)} node(s), {resources.get('CPU', 0):g} CPUs, {gpus:g} GPUs"
    summary = Check("ray", "PASS", f"{connected.detail}: {counts}")
    scaling, can_add_gpus = autoscaler_check()
    checks = [summary, scaling, fit_check(bench, gpus, can_add_gpus), versions_check(nodes)]
    return Cluster(checks, up=True, gpus=gpus, can_add_gpus=can_add_gpus)


def connect_ray(address: str | None) -> Check:
    """Join the cluster at ``address`` (or the embedded local one): a TCP probe first, so an
    address nothing listens on fails in seconds instead of Ray's minutes of retries."""
    import ray

    from orchestration.ray_cluster import init_ray

    where = f"the cluster at {address}" if address else "the embedded local cluster (no --address)"
    if not ray.is_initialized():
        unreachable = probe_address(address)
        if unreachable:
            fix = (
                "start the head (`ray start --head` / `ray up cluster.yaml`), or pass the GCS "
                "address host:6379 in --address / RAY_ADDRESS; check the firewall"
            )
            return Check("ray", "FAIL", unreachable, fix)
        try:
            init_ray(address)
        except Exception as exc:  # whatever stops the connection is the finding
            fix = "check --address / RAY_ADDRESS, the Ray token (RAY_AUTH_TOKEN) and versions"
            return Check("ray", "FAIL", f"cannot join {where}: {first_line(exc)}", fix)
    gcs = ray.get_runtime_context().gcs_address
    return Check("ray", "PASS", f"{where} reached (GCS {gcs}, Ray {ray.__version__})")


def probe_address(address: str | None) -> str:
    """Why nothing answers at ``address`` (empty when something listens, or for local/auto)."""
    if not address or address == "auto":
        return ""
    if address.startswith(("http://", "https://")):
        return (
            f"{address} is a dashboard (job API) address: doctor joins the GCS (host:6379), "
            "or runs as a Ray job (`ray job submit ... -- mammobench doctor`)"
        )
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").partition(":")
    port_number = int(port) if port.isdigit() else CLIENT_PORT if client else GCS_PORT
    try:
        with socket.create_connection((host, port_number), timeout=PROBE_TIMEOUT_S):
            return ""
    except OSError as exc:
        return f"nothing answers at {host}:{port_number} ({exc.strerror or exc})"


def node_types() -> list[dict[str, Any]] | None:
    """The node types an autoscaler reported to the GCS (None: no autoscaler config)."""
    import ray._private.state  # private, as Ray Data reads it: no public API says this yet

    config = ray._private.state.state.get_cluster_config()
    if not config or not config.node_group_configs:
        return None
    return [
        {"name": g.name, "min": g.min_count, "max": g.max_count, "resources": dict(g.resources)}
        for g in config.node_group_configs
    ]


def autoscaler_check() -> tuple[Check, bool]:
    """The node types the cluster can add, and whether it may add a GPU."""
    types = node_types()
    if types:
        growing = [t for t in types if t["max"] == -1 or t["max"] > t["min"]]
        shown = "; ".join(_node_type(t) for t in types)
        kind = "autoscaling" if growing else "fixed size"
        gpus = any(t["resources"].get("GPU") for t in growing)
        return Check("ray.autoscaler", "PASS", f"{kind}: node types {shown}"), gpus
    launched = launcher_node_types()
    if launched:
        detail = (
            f"autoscaling (node types up: {', '.join(launched)}); the types it can add are "
            "cluster.yaml's available_node_types (this autoscaler does not report them)"
        )
        return Check("ray.autoscaler", "PASS", detail), True
    detail = "not autoscaling: no autoscaler adds nodes here, the nodes above are all"
    return Check("ray.autoscaler", "PASS", detail), False


def launcher_node_types() -> list[str]:
    """Node types of the cluster launcher's autoscaler (v1), from its status in the GCS. A local
    cluster's read-only monitor names each node's type ``node_<id>``: none of those count."""
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get

    status = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    report = json.loads(status).get("autoscaler_report", {}) if status else {}
    mapping = report.get("node_type_mapping") or {}
    types = {kind for node, kind in mapping.items() if kind != f"node_{node}"}
    return sorted(types | set(report.get("pending_launches") or {}))


def _node_type(t: dict[str, Any]) -> str:
    most = "unbounded" if t["max"] == -1 else t["max"]
    resources = ", ".join(f"{k} {v:g}" for k, v in sorted(t["resources"].items()))
    return f"{t['name']} ({t['min']}..{most} x {{{resources}}})"


def fit_check(bench: Benchmark, gpus: float, can_add_gpus: bool) -> Check:
    """Whether the config's trials can be placed: a GPU trial on a cluster without GPUs (that
    cannot add any) waits for ever."""
    need = max((run.sweep.get("gpus_per_trial", 0) for run in bench.runs), default=0)
    if need and not gpus and not can_add_gpus:
        detail = f"{bench.name} asks {need:g} GPU(s) per trial; the cluster has none, adds none"
        fix = "add GPU nodes, or pass a CPU config (--config demo)"
        return Check("ray.fit", "FAIL", detail, fix)
    if need and not gpus:
        return Check("ray.fit", "PASS", f"{need:g} GPU(s) per trial: the autoscaler adds them")
    where = f"{need:g} GPU(s) per trial" if need else "CPU trials"
    return Check("ray.fit", "PASS", f"{bench.name}: {where}, the cluster has them")


def node_facts() -> dict[str, str]:
    """Run on a node: its Ray and Python versions and host name."""
    import ray

    return {"ray": ray.__version__, "python": platform.python_version(), "host": platform.node()}


def versions_check(nodes: list[dict[str, Any]]) -> Check:
    """Ray and Python on every node (a task pinned to each, all at once) against the driver's
    and the pin: another Ray, or another Python minor version, breaks the workers' unpickling."""
    driver = node_facts()
    refs = [submit(node_facts, node=node["NodeID"]) for node in nodes]
    problems = []
    for node, ref in zip(nodes, refs, strict=True):
        facts, error = wait(ref)
        where = f"node {node['NodeManagerAddress']}"
        if error:
            problems.append(f"{where}: {error}")
        elif facts["ray"] != driver["ray"] or _minor(facts["python"]) != _minor(driver["python"]):
            problems.append(f"{where} runs Ray {facts['ray']}, Python {facts['python']}")
    mine = f"Ray {driver['ray']}, Python {driver['python']}"
    if problems:
        fix = worker_fix(" ".join(problems)) or "run the driver and every node on one image"
        return Check("ray.versions", "FAIL", f"driver {mine}; " + "; ".join(problems), fix)
    pin = pinned_ray()
    detail = f"{mine} on the driver and on all {len(nodes)} node(s)"
    if pin and pin != driver["ray"]:
        fix = f"install ray=={pin} (pip install -c constraints.txt) or its image"
        return Check("ray.versions", "WARN", f"{detail}; constraints.txt pins ray=={pin}", fix)
    pinned = f"; constraints.txt pins ray=={pin}" if pin else "; no constraints.txt to compare"
    return Check("ray.versions", "PASS", detail + pinned)


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def pinned_ray() -> str | None:
    """The ray version ``constraints.txt`` pins (None where the file is not beside the package)."""
    if not CONSTRAINTS.is_file():
        return None
    for line in CONSTRAINTS.read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name.strip().lower() == "ray" and version:
            return version.strip()
    return None


def run_task(
    fn: Callable[..., Any],
    *args: Any,
    node: str | None = None,
    timeout_s: float = TASK_TIMEOUT_S,
    **options: Any,
) -> tuple[Any, str]:
    """``fn(*args)`` as a Ray task (on ``node`` when given): (its result, "") or (None, why not)."""
    return wait(submit(fn, *args, node=node, **options), timeout_s)


def submit(fn: Callable[..., Any], *args: Any, node: str | None = None, **options: Any) -> Any:
    """Start ``fn(*args)`` as a Ray task, pinned to ``node`` when given; its object ref."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if node:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
    options.setdefault("num_cpus", 0)  # a probe must not wait for a busy cluster's CPUs
    return ray.remote(fn).options(max_retries=0, **options).remote(*args)


def wait(ref: Any, timeout_s: float = TASK_TIMEOUT_S) -> tuple[Any, str]:
    """A task's (result, "") or (None, why it has none), waiting at most ``timeout_s``."""
    import ray

    try:
        return ray.get(ref, timeout=timeout_s), ""
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        return None, f"no answer in {timeout_s:.0f} s (not schedulable, or hung)"
    except ray.exceptions.RayError as exc:
        return None, first_line(getattr(exc, "cause", None) or exc)


def first_line(exc: BaseException) -> str:
    """``Type: message``, first line only (Ray's errors carry whole tracebacks)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def worker_fix(error: str) -> str:
    """The fix of a probe task that could not even start: the package missing on the nodes."""
    if "No module named" in error:
        return (
            "install mammobench on every node (cluster.yaml's setup_commands), or submit "
            "with `ray job submit --working-dir .`"
        )
    return ""
