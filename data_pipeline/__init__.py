"""CBIS-DDSM catalog, DICOM decoding, transforms, Ray Data conversion and the synthetic dataset.

The product's vocabulary lives here, at the bottom of the import graph, and nowhere else:
``models`` and ``search_spaces`` import these names (this module imports nothing).
"""

TASKS = ("classification", "segmentation", "detection")
SPLITS = ("train", "val", "test")  # the prepared splits; the catalog also counts "excluded"
