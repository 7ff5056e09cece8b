"""The probes of ``mammobench doctor`` beyond Ray itself: storage and tracking from a Ray task on
a worker node, the data's catalog and prepared shards, the pretrained rows' weights.

Each ``*_probe`` runs inside a Ray task and returns plain data (an ``error`` key when it failed),
so the driver words the line and its fix.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_pipeline.storage import Store
from orchestration.doctor import Check, first_line, run_task, worker_fix

if TYPE_CHECKING:
    from data_pipeline.catalog import Catalog
    from data_pipeline.prepare_plan import PrepareConfig
    from orchestration.settings import Settings
    from search_spaces.benchmarks import Benchmark

DOCTOR_EXPERIMENT = "mammobench-doctor"
# What the tracking probe's task is given: fail fast, and the credentials the driver logs with
FAST_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
STORAGE_FIX = (
    "make it writable by the Ray workers' user on every node (a shared mount for a local path), "
    "or pass --storage s3://bucket/path with write access for the nodes"
)
TRACKING_FIX = (
    "start the server, or fix --tracking-uri / MLFLOW_TRACKING_URI; the worker nodes must reach "
    "it (security group, the server's --allowed-hosts)"
)
SHORT_ERRORS = {
    "Connection refused": "connection refused, nothing listens there",
    "timed out": "no answer in time",
    "Name or service not known": "unknown host name",
}
AUTH_FIX = "set MLFLOW_TRACKING_USERNAME / PASSWORD to a server user allowed to create experiments"


def probe_node() -> tuple[str, str]:
    """(node id, words) of the node the probes run on: a worker node, GPU ones first; the
    driver's own node only on a one-node cluster."""
    import ray

    driver = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != driver]
    if not others:
        return driver, "the driver's node (a one-node cluster: the same node)"
    node = max(others, key=lambda n: n["Resources"].get("GPU", 0))
    return node["NodeID"], f"worker node {node['NodeManagerAddress']}"


def storage_uri(storage: str) -> str:
    """A URI pyarrow opens: bucket URIs as they are, a local path made absolute."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def storage_probe(uri: str, name: str, delete: bool) -> dict[str, Any]:
    """Run on a node: write ``name`` under ``uri`` and read it back, or delete it."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        path = f"{root.rstrip('/')}/{name}"
        if delete:
            fs.delete_file(path)
            return {}
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(name.encode())
        with fs.open_input_stream(path) as src:
            back = src.read()
    except Exception as exc:  # any reason it cannot write is the finding
        return {"error": first_line(exc)}
    return {"filesystem": fs.type_name, "read_back": back == name.encode()}


def storage_check(storage: str, node: tuple[str, str]) -> Check:
    """A task on ``node`` writes, reads and deletes a file under ``storage``; between the two the
    driver looks for it (a local path that is not shared is seen only where it was written)."""
    import pyarrow.fs as pafs

    uri, name = storage_uri(storage), f".mammobench-doctor-{uuid.uuid4().hex[:8]}"
    node_id, where = node
    wrote, error = run_task(storage_probe, uri, name, False, node=node_id)
    error = error or (wrote or {}).get("error")
    if error:
        fix = worker_fix(error) or STORAGE_FIX
        return Check("storage", "FAIL", f"{uri} not writable from {where}: {error}", fix)
    fs, root = pafs.FileSystem.from_uri(uri)
    shared = fs.get_file_info(f"{root.rstrip('/')}/{name}").type != pafs.FileType.NotFound
    deleted, error = run_task(storage_probe, uri, name, True, node=node_id)
    error = error or (deleted or {}).get("error")
    if error:
        return Check("storage", "FAIL", f"{uri}: cannot delete from {where}: {error}", STORAGE_FIX)
    if not wrote["read_back"]:
        detail = f"{uri}: the file read back from {where} differs from what it wrote"
        return Check("storage", "FAIL", detail, STORAGE_FIX)
    detail = f"{uri} ({wrote['filesystem']}) written, read and deleted from {where}"
    if not shared:
        fix = "use shared storage: a bucket URI or a mount every node and the driver share"
        return Check("storage", "WARN", f"{detail}, but the driver does not see the file", fix)
    return Check("storage", "PASS", detail)


def tracking_probe(uri: str, artifact_root: str | None) -> dict[str, Any]:
    """Run on a node: create the doctor's experiment, log a run with a metric and an artifact,
    delete it; says at which stage it failed."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from orchestration.results.tracking import experiment_id

    stage, out = "reach", {"user": os.environ.get("MLFLOW_TRACKING_USERNAME")}
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
        stage = "experiment"
        exp = experiment_id(client, DOCTOR_EXPERIMENT, artifact_root and Path(artifact_root))
        stage = "run"
        run_id = client.create_run(exp, run_name="doctor").info.run_id
        client.log_metric(run_id, "doctor_probe", 1.0)
        stage = "artifact"
        with tempfile.TemporaryDirectory() as folder:
            probe = Path(folder) / "doctor.txt"
            probe.write_text("written by mammobench doctor\n")
            client.log_artifact(run_id, str(probe))
        out["artifact_uri"] = client.get_run(run_id).info.artifact_uri
        if "doctor.txt" not in [a.path for a in client.list_artifacts(run_id)]:
            return out | {"stage": stage, "error": "the artifact is not listed after logging"}
        stage = "delete"
        client.delete_run(run_id)
    except Exception as exc:  # any reason it cannot log is the finding
        return out | {"stage": stage, "error": first_line(exc)}
    return out


def tracking_checks(settings: Settings, node: tuple[str, str]) -> list[Check]:
    """The tracking store from ``node`` with the driver's credentials; a local sqlite store is
    created once here and probed on the driver's node, where its file is."""
    from orchestration.results.tracking import client_for

    uri, (node_id, where) = settings.tracking_uri, node
    local = uri.startswith("sqlite:")
    if local:
        import ray

        client_for(uri)  # the database and its schema, made once by this driver
        node_id, where = ray.get_runtime_context().get_node_id(), "the driver's node"
    env = FAST_MLFLOW | {k: os.environ[k] for k in CREDENTIALS if os.environ.get(k)}
    root = str(settings.artifact_root) if local else None
    found, error = run_task(tracking_probe, uri, root, node=node_id, runtime_env={"env_vars": env})
    if error or found.get("error"):
        return [_tracking_failure(uri, where, error, found or {})]
    user = f"as {found['user']}" if found["user"] else "without credentials"
    detail = f"{uri} from {where} {user}: experiment {DOCTOR_EXPERIMENT}, run logged and deleted"
    artifacts = f"writable: {found['artifact_uri']} (a file logged and listed)"
    return [Check("tracking", "PASS", detail), Check("tracking.artifacts", "PASS", artifacts)]


def _tracking_failure(uri: str, where: str, error: str, found: dict[str, Any]) -> Check:
    stage, error = found.get("stage", "reach"), _short(error or found["error"])
    if stage == "artifact":
        where_to = found.get("artifact_uri") or "the experiment's artifact location"
        fix = f"give the nodes write access to {where_to} (bucket policy, the server's mount)"
        return Check("tracking.artifacts", "FAIL", f"not writable from {where}: {error}", fix)
    denied = any(code in error for code in ("401", "403", "Unauthorized", "PERMISSION_DENIED"))
    fix = worker_fix(error) or (AUTH_FIX if denied else TRACKING_FIX)
    return Check("tracking", "FAIL", f"{uri} from {where}, at {stage}: {error}", fix)


def _short(error: str) -> str:
    """An HTTP client's error as a person says it (urllib3's runs to several hundred characters)."""
    for cause, words in SHORT_ERRORS.items():
        if cause in error:
            return f"{words} ({error.split(' failed with ')[0].removeprefix('MlflowException: ')})"
    return error[:300]


def data_checks(data: str | None, bench: Benchmark, out: str) -> list[Check]:
    """The catalog of a download (missing files, rejected rows, as ``catalog`` counts them) and
    whether the benchmark's prepared shards of it exist; or the shards given as ``data``."""
    from data_pipeline.catalog import build_catalog
    from data_pipeline.prepare_plan import PrepareConfig

    if data is None:
        fix = "pass --data DATA, the download (or prepared shards) the benchmark will read"
        return [Check("data", "WARN", "no --data: catalog and prepared shards not checked", fix)]
    if Store.at(data).is_file("manifest.json"):
        return [given_shards_check(data, bench)]
    cfg = PrepareConfig(tasks=tuple(sorted({r.task for r in bench.runs})), **bench.prepare)
    try:
        catalog = build_catalog(data, None, val_fraction=cfg.val_fraction, seed=cfg.seed)
    except (FileNotFoundError, ValueError) as exc:
        fix = "point --data at a CBIS-DDSM download (its CSVs and DICOM tree)"
        return [Check("data", "FAIL", f"{data}: {exc}", fix)]
    return [*catalog_checks(catalog.summary()), prepared_check(catalog, cfg, bench, out)]


def catalog_checks(summary: dict[str, Any]) -> list[Check]:
    """Missing and unreadable files (FAIL: their rows are lost), rejected rows (WARN)."""
    data, splits = summary["data"], summary["by_split"]
    counted = ", ".join(f"{k} {v}" for k, v in splits.items())
    what = f"{summary['patients']} patients, {summary['abnormalities']} abnormalities ({counted})"
    checks = [Check("data.catalog", "PASS", f"{data}: {what}")]
    missing, unreadable = summary["missing_files"], summary["unreadable_files"]
    if missing or unreadable:
        examples = ", ".join(summary["missing_examples"][:2])
        detail = f"{missing} file(s) the CSVs list are missing, {unreadable} unreadable"
        fix = f"complete the download; `mammobench catalog {data}` lists them"
        checks.append(Check("data.files", "FAIL", f"{detail} (e.g. {examples})", fix))
    else:
        checks.append(Check("data.files", "PASS", "every file the CSVs list is there"))
    rejected = summary["rejected_rows"]
    if rejected or summary["csv_errors"]:
        first = summary["rejections"][0] if summary["rejections"] else {}
        example = f" (e.g. {first['csv_file']} line {first['line']}: {first['reason']})"
        detail = f"{rejected} row(s) rejected, {len(summary['csv_errors'])} CSV error(s)"
        fix = f"they are left out of every split; `mammobench catalog {data}` lists them"
        checks.append(Check("data.rows", "WARN", detail + example * bool(first), fix))
    else:
        checks.append(Check("data.rows", "PASS", "no row rejected"))
    return checks


def prepared_check(catalog: Catalog, cfg: PrepareConfig, bench: Benchmark, out: str) -> Check:
    """Whether ``out`` holds shards of this data and config (as ``benchmark`` prepares them)."""
    from dataclasses import replace

    folders = {out: cfg}
    if any(run.input == "whole" for run in bench.runs):  # benchmark_data's folder beside it
        whole = replace(cfg, tasks=("classification",), cls_input="whole")
        folders[f"{out.rstrip('/')}-whole"] = whole
    states = {folder: prepared_state(folder, catalog, c) for folder, c in folders.items()}
    if all(state == "ready" for state in states.values()):
        return Check("data.prepared", "PASS", f"shards of this config exist: {out}")
    shown = ", ".join(f"{folder} {state}" for folder, state in states.items())
    return Check("data.prepared", "PASS", f"{shown}: the benchmark prepares them first")


def prepared_state(folder: str, catalog: Catalog, cfg: PrepareConfig) -> str:
    """``ready``, ``none``, ``partial`` (tasks missing) or ``stale`` (other data or config)."""
    from data_pipeline.convert import FORMAT
    from data_pipeline.prepare_plan import fingerprint

    try:
        manifest = json.loads(Store.at(folder).read_bytes("manifest.json"))
    except FileNotFoundError:
        return "none yet"
    if manifest.get("fingerprint") != f"{fingerprint(catalog, cfg)}-v{FORMAT}":
        return "stale (other data or options: rebuilt)"
    return "partial" if set(cfg.tasks) - set(manifest.get("tasks", {})) else "ready"


def given_shards_check(data: str, bench: Benchmark) -> Check:
    """Prepared shards given as DATA: the tasks the config's rows need, and their sizes."""
    manifest = json.loads(Store.at(data).read_bytes("manifest.json"))
    config, tasks = manifest.get("config", {}), manifest.get("tasks", {})
    lacking = sorted({run.task for run in bench.runs} - set(tasks))
    if lacking:
        fix = f"mammobench prepare DOWNLOAD --out {data} --task all"
        return Check("data", "FAIL", f"{data} holds no {', '.join(lacking)} shards", fix)
    rows = ", ".join(f"{t} {sum(i.get('splits', {}).values())} rows" for t, i in tasks.items())
    other = {k: (config.get(k), v) for k, v in bench.prepare.items() if config.get(k) != v}
    if other:
        shown = ", ".join(f"{k} {have} (config: {want})" for k, (have, want) in other.items())
        fix = "used as given; pass the download to prepare them as the config says"
        return Check("data", "WARN", f"prepared shards {data} ({rows}) differ: {shown}", fix)
    return Check("data", "PASS", f"prepared shards {data}: {rows}")


def weights_checks(weights_dir: str | None, bench: Benchmark, node: tuple[str, str]) -> list[Check]:
    """Every pretrained row's weights in ``weights_dir`` (``weights check``, run on ``node``)."""
    from models.weights_store import check_weights_dir

    models = sorted({run.model for run in bench.runs if run.setting == "pretrained"})
    if not models:
        return [Check("weights", "PASS", f"{bench.name} has no pretrained rows")]
    fix = "run `mammobench weights download DIR` where there is internet, copy DIR here"
    if not weights_dir:
        detail = (
            f"no --weights-dir: the pretrained rows of {len(models)} architectures need the "
            "hub's cache or internet on every node, else they are skipped"
        )
        return [Check("weights", "WARN", detail, fix + ", pass --weights-dir DIR")]
    node_id, where = node
    rows, error = run_task(check_weights_dir, weights_dir, models, node=node_id)
    if error:
        return [Check("weights", "FAIL", f"{weights_dir} from {where}: {error}", fix)]
    return [
        Check(f"weights.{r['model']}", r["status"], r["detail"], _weights_fix(r, weights_dir))
        for r in rows
    ]


def _weights_fix(row: dict[str, str], weights_dir: str) -> str:
    if row["status"] == "PASS" or "weights download" in row["detail"]:
        return ""
    return f"run `mammobench weights download {weights_dir}` where there is internet, copy it here"
