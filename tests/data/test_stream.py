"""Endless streams: reshuffled epochs, DDP slices, exact resume."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from ulfine.data import make_stream


class Indices(Dataset):
    """Item (i, seed) is {"index": i, "seed": seed}: batches show which samples were drawn."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: tuple[int, int]) -> dict[str, int]:
        i, seed = key
        return {"index": i, "seed": seed}


def draw(stream, steps: int) -> list[list[int]]:
    return [next(stream)["index"].tolist() for _ in range(steps)]


def test_each_epoch_is_a_new_permutation() -> None:
    batches = draw(make_stream(Indices(10), 5, seed=0, num_workers=0), 4)
    first, second = batches[0] + batches[1], batches[2] + batches[3]
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second


def test_same_seed_same_order_and_other_seed_differs() -> None:
    assert draw(make_stream(Indices(20), 4, 1, 0), 3) == draw(make_stream(Indices(20), 4, 1, 0), 3)
    assert draw(make_stream(Indices(20), 4, 1, 0), 3) != draw(make_stream(Indices(20), 4, 2, 0), 3)


def test_dataset_smaller_than_a_batch() -> None:
    (batch,) = draw(make_stream(Indices(3), 7, seed=0, num_workers=0), 1)
    assert len(batch) == 7 and set(batch) == {0, 1, 2}


def test_ranks_are_disjoint_and_union_is_the_global_batch() -> None:
    single = draw(make_stream(Indices(50), 8, seed=3, num_workers=0), 5)
    ranks = [draw(make_stream(Indices(50), 8, 3, 0, rank=r, world_size=2), 5) for r in range(2)]
    for step in range(5):
        assert len(ranks[0][step]) == 4
        assert ranks[0][step] + ranks[1][step] == single[step]


def test_resume_continues_exactly() -> None:
    stream = make_stream(Indices(13), 4, seed=5, num_workers=0)
    draw(stream, 5)  # crosses an epoch boundary (20 > 13)
    state = stream.state_dict()
    assert (state["epoch"], state["index"]) == (1, 7)
    expected = draw(stream, 4)
    resumed = make_stream(Indices(13), 4, seed=5, num_workers=0)
    resumed.load_state_dict(state)
    assert draw(resumed, 4) == expected


def test_resume_refuses_another_seed() -> None:
    state = make_stream(Indices(5), 2, seed=0, num_workers=0).state_dict()
    with pytest.raises(ValueError, match="seed=0"):
        make_stream(Indices(5), 2, seed=1, num_workers=0).load_state_dict(state)


def test_workers_give_the_same_batches() -> None:
    assert draw(make_stream(Indices(16), 4, 0, num_workers=2), 3) == draw(make_stream(Indices(16), 4, 0, 0), 3)


def seeds(stream, steps: int) -> list[list[int]]:
    return [next(stream)["seed"].tolist() for _ in range(steps)]


def test_sample_seeds_do_not_depend_on_workers_ranks_or_resume() -> None:
    single = seeds(make_stream(Indices(12), 4, seed=0, num_workers=0), 4)
    assert len({s for batch in single for s in batch}) == 16  # one distinct seed per position
    assert seeds(make_stream(Indices(12), 4, seed=0, num_workers=2), 4) == single
    ranks = [seeds(make_stream(Indices(12), 4, 0, 0, rank=r, world_size=2), 4) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == single
    stream = make_stream(Indices(12), 4, seed=0, num_workers=0)
    seeds(stream, 2)
    resumed = make_stream(Indices(12), 4, seed=0, num_workers=0)
    resumed.load_state_dict(stream.state_dict())
    assert seeds(resumed, 2) == single[2:]
    assert seeds(make_stream(Indices(12), 4, seed=1, num_workers=0), 1) != single[:1]
