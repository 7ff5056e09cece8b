"""``cluster.yaml`` and the KubeRay job: valid for the installed Ray, and matching its version."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_validates_against_the_installed_ray_schema() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # no trial lands on the head
    assert any("mlflow server" in cmd for cmd in config["head_start_ray_commands"])
    assert any("constraints.txt" in cmd for cmd in config["setup_commands"])


def test_cluster_yaml_schema_check_catches_a_typo() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text()) | {"max_worker": 8}
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(config, schema)


def test_rayjob_runs_mammobench_on_the_same_ray() -> None:
    job = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray.__version__
    assert job["spec"]["entrypoint"].startswith("mammobench ")
