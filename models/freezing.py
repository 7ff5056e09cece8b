"""Unfreezing the last N stage groups, defined once for every architecture.

Each registry entry says how to split its backbone into ordered stage groups (input side
first); everything outside those groups (the task head: classification head, segmentation
decoder, detection FPN/RPN/ROI heads) always trains. `unfreeze=N` keeps the last N groups
trainable and freezes the rest; `0` trains the head only and `"all"` trains everything.

| Family                 | Stage groups (input → output)                                   |
|------------------------|-----------------------------------------------------------------|
| timm classifiers       | `model.group_matcher(coarse=False)`: stem, then one group per   |
|                        | block (VGG: per conv layer; ViT: per transformer block)         |
| smp segmenters         | encoder stem, then `layer1`..`layer4` (ResNet-family encoders); |
|                        | any other encoder is a single group (choices `0` or `"all"`)    |
| torchvision detectors  | the stages of torchvision's `trainable_backbone_layers`          |

A BatchNorm layer whose parameters are all frozen also keeps its running statistics frozen:
it is put in eval mode and a forward pre-hook puts it back in eval mode on every call, so a
later `model.train()` cannot restart the statistics. (The hook lives on the module: it is
kept by `copy.deepcopy`/pickling but not by `nn.SyncBatchNorm.convert_sync_batchnorm`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from timm.models import group_parameters
from torch import nn

from models.spec import Unfreeze

StageGroups = list[list[str]]
"""Ordered groups of fully qualified parameter names, input side first."""

_HOOK_ATTR = "_mammobench_frozen_bn_hook"

EFFICIENTNET_STAGES = {"stem": r"^conv_stem|^bn1", "blocks": r"^blocks\.(\d+)\.(\d+)"}
"""timm's fine-grained EfficientNet groups without the head (a `features_only` model's)."""


def matcher_groups(module: nn.Module, matcher: dict[str, Any], prefix: str) -> StageGroups:
    """Stage groups of `module` from a timm group matcher (regexes), names given `prefix`."""
    groups = group_parameters(module, matcher)
    return [[prefix + name for name in groups[key]] for key in sorted(groups)]


def unfreeze_choices(num_groups: int) -> list[int | str]:
    """The valid `unfreeze` values for a model with `num_groups` stage groups."""
    return [*range(num_groups), "all"]


def trainable_groups(unfreeze: Unfreeze, num_groups: int) -> int:
    """How many trailing stage groups train for a given `unfreeze` value.

    Raises:
        ValueError: `unfreeze` is larger than the number of groups.
    """
    if unfreeze == "all":
        return num_groups
    if not 0 <= unfreeze <= num_groups:
        raise ValueError(
            f"unfreeze={unfreeze} but this model has {num_groups} stage groups; "
            f"choices: {unfreeze_choices(num_groups)}"
        )
    return unfreeze


def unfreeze_last(model: nn.Module, groups: Sequence[Sequence[str]], unfreeze: Unfreeze) -> None:
    """Freezes all but the last `unfreeze` stage groups of `model` in place.

    Parameters outside `groups` (the head) stay trainable. Calling it again with another
    value re-applies the setting, so progressive unfreezing works.
    """
    keep = trainable_groups(unfreeze, len(groups))
    frozen = {name for group in groups[: len(groups) - keep] for name in group}
    params = dict(model.named_parameters())
    missing = frozen - params.keys()
    if missing:
        raise ValueError(f"stage groups name unknown parameters: {sorted(missing)[:5]}")
    for name, param in params.items():
        param.requires_grad_(name not in frozen)
    sync_frozen_batchnorm(model)


def sync_frozen_batchnorm(model: nn.Module) -> None:
    """Keeps the statistics of every fully frozen BatchNorm layer frozen, and only those."""
    for module in model.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        handle = getattr(module, _HOOK_ATTR, None)
        if is_frozen_batchnorm(module) and handle is None:
            setattr(module, _HOOK_ATTR, module.register_forward_pre_hook(_keep_eval))
            module.eval()
        elif not is_frozen_batchnorm(module) and handle is not None:
            handle.remove()
            delattr(module, _HOOK_ATTR)
            module.train(model.training)


def is_frozen_batchnorm(module: nn.Module) -> bool:
    """True for a BatchNorm layer whose affine parameters exist and are all frozen."""
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def trainable_params(model: nn.Module) -> int:
    """Number of parameters that receive gradients (the MLflow `trainable_params`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def total_params(model: nn.Module) -> int:
    """Number of parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def _keep_eval(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: a frozen BatchNorm normalises with its stored statistics."""
    module.train(False)
