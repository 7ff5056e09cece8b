"""Patient-level, leak-free splits for CBIS-DDSM.

The official test split stays intact. Validation is carved from the official training rows by
patient (seeded, stratified by whether the patient has any malignant lesion). A patient who appears in
the official test split of *either* lesion type is kept out of train and val entirely: once mass and
calc are merged, 13 mass-train and 18 calc-train patients are also test patients. Their training rows
are marked ``excluded`` and counted, never silently dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np


def assign_splits(
    rows: Iterable[tuple[str, str, str]], val_fraction: float = 0.15, seed: int = 0
) -> dict[str, str]:
    """Split patients into train / val / test / excluded.

    Args:
        rows: ``(patient_id, official_split, pathology)`` per abnormality.
        val_fraction: Share of eligible training patients moved to validation, per stratum.
        seed: Seed of the patient shuffle; the same inputs and seed give the same split.

    Returns:
        ``{patient_id: split}`` where split is train, val, test or excluded (a training-set patient
        who also has test rows).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    official: dict[str, set[str]] = defaultdict(set)
    malignant: dict[str, bool] = defaultdict(bool)
    for patient, split, pathology in rows:
        official[patient].add(split)
        malignant[patient] |= pathology == "MALIGNANT"
    result = {p: "test" if "test" in s else "train" for p, s in official.items()}
    for patient, splits in official.items():
        if "test" in splits and "train" in splits:
            result[patient] = "excluded"  # test rows stay test; train rows get excluded below
    rng = np.random.default_rng(seed)
    for stratum in (True, False):
        pool = sorted(p for p, s in result.items() if s == "train" and malignant[p] == stratum)
        n_val = round(len(pool) * val_fraction)
        for patient in rng.permutation(pool)[:n_val]:
            result[str(patient)] = "val"
    return result


def row_split(patient_split: str, official_split: str) -> str:
    """The split of one row given its patient's split and the row's official split."""
    if patient_split == "excluded":
        return "test" if official_split == "test" else "excluded"
    return patient_split
