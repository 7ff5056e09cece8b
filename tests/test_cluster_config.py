"""``cluster.yaml`` and the KubeRay job: valid for the installed Ray, and matching its version."""

from __future__ import annotations

import json
import re
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


def test_the_cluster_commands_name_data_every_node_reaches() -> None:
    """Nodes share no disk: the README's cluster commands, cluster.yaml and the RayJob name the
    bucket (or a ReadWriteMany volume), not a path of one machine."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Run on a GPU cluster") :].split("\n## ")[0]
    code = "".join(re.findall(r"```bash\n(.*?)```", section, re.S))
    commands = [line for line in code.splitlines() if "--data " in line]
    assert commands and all("--data s3://" in line for line in commands)
    assert "aws s3 sync" in section
    config = (REPO / "cluster.yaml").read_text()
    assert "--data\n#   s3://" in config or "--data s3://" in config.replace("\n#   ", " ")
    assert "cached on local disk" not in config
    job = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())
    assert "--data s3://" in job["spec"]["entrypoint"]
    text = (REPO / "deploy" / "rayjob.yaml").read_text()
    assert "persistentVolumeClaim" not in text and "ReadWriteMany" in text
