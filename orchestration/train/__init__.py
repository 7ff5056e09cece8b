"""Ray Train, one job: config → data → tasks → the worker loop (``train_fn_per_worker``) → driver.

Imports flow down that list; nothing here imports ``orchestration.results`` or Tune.
"""
