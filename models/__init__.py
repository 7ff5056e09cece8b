"""Model registry for mammobench: classifiers (timm), segmenters (smp), detectors (torchvision).

`build_model(ModelSpec(...))` is the one public constructor; `available_models()` lists the
registry. This package never imports Ray Train/Tune or MLflow.
"""

from models.freezing import trainable_params
from models.registry import (
    UnknownModelError,
    available_models,
    build_model,
    model_info,
    models_table,
    weights_available,
)
from models.spec import ModelSpec
from models.weights import WEIGHTS_DIR_ENV, WeightsNotFoundError

__all__ = [
    "WEIGHTS_DIR_ENV",
    "ModelSpec",
    "UnknownModelError",
    "WeightsNotFoundError",
    "available_models",
    "build_model",
    "model_info",
    "models_table",
    "trainable_params",
    "weights_available",
]
