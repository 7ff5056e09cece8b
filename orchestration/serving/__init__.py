"""The registered model: logged as MLflow models-from-code (``pyfunc_model.py``), used by
``mammobench predict`` and ``mammobench evaluate``."""
