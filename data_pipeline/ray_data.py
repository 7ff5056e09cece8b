"""Ray Data settings scoped to the datasets made inside a ``with`` block.

A dataset keeps a copy of the ``DataContext`` it was made in and runs with it (in the driver, in a
split coordinator, on a Train worker), so settings given here stay with those datasets and nothing
else in the process changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def data_context(**settings: Any) -> Iterator[None]:
    """Set ``DataContext`` attributes while datasets are made; restore them afterwards."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = {name: getattr(ctx, name) for name in settings}
    for name, value in settings.items():
        setattr(ctx, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)
