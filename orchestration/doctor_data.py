"""The doctor's data probes, run as Ray tasks on a worker node: can the nodes read DATA, and write
where the benchmark prepares it? On a cluster whose nodes share no disk, a folder the driver sees
may not exist on the nodes that convert the images and train on the shards: these run there.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from data_pipeline.storage import Store
from orchestration.doctor import Check, run_task, worker_fix

READ_FIX = (
    "put the download where every node reads it: a bucket (`aws s3 sync DOWNLOAD "
    "s3://BUCKET/cbis-ddsm`; read access in the nodes' instance profile) or a mount on every node"
)
WRITE_FIX = (
    "prepare into a bucket prefix the nodes may write (--prep s3://BUCKET/prepared: "
    "s3:PutObject, GetObject, DeleteObject, ListBucket) or a mount every node shares"
)


def data_probe(data: str) -> dict[str, Any]:
    """Run on a node: list DATA, count its case CSVs and DICOMs and read one DICOM's header; or,
    for prepared shards, read the manifest and one shard's footer."""
    import pyarrow.parquet as pq

    from data_pipeline.case_csv import find_case_csvs
    from data_pipeline.catalog import file_header

    store = Store.at(data)
    try:
        if store.is_file("manifest.json"):
            manifest = json.loads(store.read_bytes("manifest.json"))
            shards = [
                s for t in manifest["tasks"].values() for v in t["shards"].values() for s in v
            ]
            with store.open(shards[0]) as handle:
                rows = pq.read_metadata(handle).num_rows
            return {"kind": "shards", "shards": len(shards), "first": shards[0], "rows": rows}
        listing = store.files()
        dicoms = [name for name in listing if name.lower().endswith(".dcm")]
        out = {"kind": "download", "csvs": len(find_case_csvs(listing)), "dicoms": len(dicoms)}
        if dicoms:
            file_header(store, dicoms[0])
            out["header"] = dicoms[0]
        return out
    except Exception as exc:  # any failure is the answer; DicomError reasons hold no header values
        return {"error": f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"}


def write_probe(prep: str, name: str) -> dict[str, Any]:
    """Run on a node: write ``name`` under PREP, read it back; the driver looks, then deletes."""
    store = Store.at(prep)
    try:
        store.make_dir()
        store.write_bytes(name, name.encode())
        return {"read_back": store.read_bytes(name) == name.encode()}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def data_access_checks(data: str, prep: str, node: tuple[str, str]) -> list[Check]:
    """DATA read from ``node``; PREP written from it (when DATA is a download to prepare)."""
    node_id, where = node
    found, error = run_task(data_probe, data, node=node_id)
    error = error or (found or {}).get("error")
    if error:
        fix = worker_fix(error) or READ_FIX
        return [Check("data.access", "FAIL", f"{data} not readable from {where}: {error}", fix)]
    if found["kind"] == "shards":
        detail = f"{data} from {where}: {found['shards']} shards listed, {found['first']} read"
        return [Check("data.access", "PASS", detail)]
    if not found["csvs"] or not found.get("header"):
        what = "no case-description CSV" if not found["csvs"] else "no DICOM file"
        return [Check("data.access", "FAIL", f"{data} from {where}: {what} found", READ_FIX)]
    detail = (
        f"{data} from {where}: {found['csvs']} case CSVs, {found['dicoms']} DICOMs listed, "
        f"a header read ({found['header']})"
    )
    return [Check("data.access", "PASS", detail), prep_write_check(prep, node)]


def prep_write_check(prep: str, node: tuple[str, str]) -> Check:
    """A node writes a file under PREP; the driver must see it (the trials on other nodes read
    the shards the conversion tasks write)."""
    node_id, where = node
    name = f".mammobench-doctor-{uuid.uuid4().hex[:8]}"
    wrote, error = run_task(write_probe, prep, name, node=node_id)
    error = error or (wrote or {}).get("error")
    if error:
        return Check("prep.access", "FAIL", f"{prep} not writable from {where}: {error}", WRITE_FIX)
    store = Store.at(prep)
    seen = store.is_file(name)
    store.delete(name)
    if not wrote["read_back"] or not seen:
        why = "read back differs" if seen else "the driver does not see the file it wrote"
        return Check("prep.access", "FAIL", f"{prep} from {where}: {why}", WRITE_FIX)
    return Check("prep.access", "PASS", f"{prep} written from {where}, seen by the driver")
