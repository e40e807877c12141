"""How a set is dealt to the ranks: whole batches of the one-process order, each exactly once."""

from __future__ import annotations

import pytest

from pefty_whisper.ranks import map_batches, rank_batches


def batches_of(monkeypatch, rank: int, world: int, order: list[int], size: int) -> list[list[int]]:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    return rank_batches(order, size)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_every_batch_of_one_process_goes_to_exactly_one_rank(monkeypatch, world):
    order = [4, 0, 3, 1, 6, 2, 5]  # sorted by duration elsewhere: any order is kept
    single = batches_of(monkeypatch, 0, 1, order, 2)
    assert single == [[4, 0], [3, 1], [6, 2], [5]]
    dealt = [batches_of(monkeypatch, r, world, order, 2) for r in range(world)]
    assert sorted(b for part in dealt for b in part) == sorted(single)  # same batches, once each
    assert dealt[0][0] == single[0]  # rank 0 takes batches 0, world, 2 world, ...
    if world > 1:
        assert dealt[1][0] == single[1]


def test_in_one_process_map_batches_is_the_plain_loop(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    seen: list[list[int]] = []

    def work(batch: list[int]) -> list[str]:
        seen.append(batch)
        return [f"row{i}" for i in batch]

    assert map_batches([2, 0, 1], 2, work) == {2: "row2", 0: "row0", 1: "row1"}
    assert seen == [[2, 0], [1]]
