"""Run ids: restore orders version folders by them, so they must sort by time."""

from __future__ import annotations

from datetime import datetime, timedelta

from backup import records


def test_run_ids_within_one_second_sort_by_time():
    start = datetime(2026, 11, 26, 8, 7, 11, 0)
    ids = [records.new_run_id(start + timedelta(milliseconds=ms)) for ms in (0, 1, 250, 999, 1000)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(len(i) == len("20261126-080711-0003") and i[:15] == ids[0][:15] for i in ids[:4])
