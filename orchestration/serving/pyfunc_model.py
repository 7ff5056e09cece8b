"""The registered model's code (MLflow models-from-code): nothing of it is pickled.

MLflow runs this file when the model loads. ``load_context`` rebuilds the network from the
model's ``spec.json`` (architecture, input size, preprocessing, label names, the validation
threshold) and its weights file (safetensors: tensors only, no code). ``predict`` takes a
DataFrame whose ``image`` column holds the bytes of DICOM or image files, applies ``prepare``'s
decode, resize and CLAHE (``data_pipeline.inference``), and returns one row per file: class
probabilities and the thresholded label, a mask, or boxes.
"""

from __future__ import annotations

import json
from typing import Any

import cv2
import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from safetensors.torch import load_model

from data_pipeline.inference import model_image, read_any
from data_pipeline.transforms import encode_png
from models import ModelSpec, build_model

SPEC, WEIGHTS = "spec", "weights"  # the artifacts' keys


class MammogramModel(PythonModel):
    """A mammobench classifier, segmenter or detector behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Rebuild the network from the spec and load its weights (no pretrained download)."""
        with open(context.artifacts[SPEC]) as file:
            self.spec = json.load(file)
        model = build_model(ModelSpec.from_dict(self.spec["model"] | {"pretrained": False}))
        load_model(model, context.artifacts[WEIGHTS])
        self.net = model.eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One output row per input row's ``image`` (file bytes)."""
        rows = [self.predict_file(bytes(data)) for data in model_input["image"]]
        return pd.DataFrame(rows)

    def predict_file(self, data: bytes) -> dict[str, Any]:
        """The output for one file's bytes (see the module's docstring)."""
        image = read_any(data)
        pre = self.spec["preprocess"]
        small = model_image(image, self.spec["task"], pre["size"], pre["clip_limit"])
        with torch.no_grad():
            return OUTPUTS[self.spec["task"]](self, self.tensor(small), image.shape)

    def tensor(self, small: np.ndarray) -> torch.Tensor:
        """(1, C, H, W) floats in [0, 1], grey repeated to the channels the network takes."""
        x = torch.from_numpy(small).float().div(255)[None, None]
        return x.expand(-1, self.spec["model"]["in_chans"], -1, -1)

    def classify(self, x: torch.Tensor, shape: tuple[int, ...]) -> dict[str, Any]:
        """Class probabilities; malignant when its probability reaches the threshold."""
        probs = torch.softmax(self.net(x).float(), dim=1)[0].tolist()
        names, threshold = self.spec["labels"], self.spec["threshold"]
        malignant = probs[-1] >= threshold
        others = int(np.argmax(probs[:-1]))
        return {f"prob_{n.lower()}": p for n, p in zip(names, probs, strict=True)} | {
            "malignant_probability": probs[-1],
            "threshold": threshold,
            "label": names[-1] if malignant else names[others],
        }

    def segment(self, x: torch.Tensor, shape: tuple[int, ...]) -> dict[str, Any]:
        """The lesion mask at the file's own resolution (PNG, 0/255) and its share of it."""
        small = (self.net(x)[0, 0] > 0).numpy().astype(np.uint8) * 255
        mask = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return {"lesion_fraction": float((mask > 0).mean()), "mask_png": encode_png(mask)}

    def detect(self, x: torch.Tensor, shape: tuple[int, ...]) -> dict[str, Any]:
        """Boxes (x0, y0, x1, y1) in the file's own pixels, their scores and labels."""
        out = self.net([x[0]])[0]
        scale = np.array([shape[1] / x.shape[3], shape[0] / x.shape[2]] * 2)
        boxes = out["boxes"].numpy() * scale
        names = self.spec["labels"]
        return {
            "boxes": [[round(float(v), 1) for v in box] for box in boxes],
            "scores": [float(s) for s in out["scores"]],
            "labels": [names[int(i) - 1] for i in out["labels"]],
        }


OUTPUTS = {
    "classification": MammogramModel.classify,
    "segmentation": MammogramModel.segment,
    "detection": MammogramModel.detect,
}

mlflow.models.set_model(MammogramModel())
