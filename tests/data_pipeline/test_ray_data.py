"""``data_context``: Ray Data settings that stay with the datasets made inside the block."""

from __future__ import annotations

import pytest

from data_pipeline.ray_data import data_context


def test_datasets_keep_the_settings_and_the_process_gets_its_own_back(ray_local: str) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.op_resource_reservation_enabled, ctx.enable_progress_bars
    with data_context(op_resource_reservation_enabled=not before[0], enable_progress_bars=False):
        ds = ray.data.from_items([{"x": 1}, {"x": 2}]).map(lambda row: {"x": row["x"] * 10})
    assert (ctx.op_resource_reservation_enabled, ctx.enable_progress_bars) == before
    assert ds.context.op_resource_reservation_enabled is (not before[0])
    assert ds.context.enable_progress_bars is False
    assert sorted(row["x"] for row in ds.iter_rows()) == [10, 20]


def test_settings_are_restored_when_the_block_raises() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.enable_progress_bars
    with pytest.raises(RuntimeError), data_context(enable_progress_bars=not before):
        raise RuntimeError("boom")
    assert ctx.enable_progress_bars is before
