"""bench/hot_path.py: the store's three operations of a message are each measured, on real messages; the
thread hop, the dialogue replay and a policy prediction are timed."""

from __future__ import annotations

from pathlib import Path

from bench.hot_path import dialogue_costs, hop_cost, store_costs
from bench.load import read_questions


async def test_store_costs_measure_each_operation_of_a_message() -> None:
    costs = await store_costs(read_questions()[:20], messages=25)
    assert list(costs) == ["enqueue", "load", "complete"]  # the lease comes with the enqueue, goes with the complete
    assert all(ms > 0 for ms in costs.values()), costs


async def test_a_thread_hop_costs_some_cpu() -> None:
    assert await hop_cost(50) > 0


def test_the_dialogue_replay_and_prediction_are_timed_over_the_bots_domain() -> None:
    replay, carried, predict = dialogue_costs(Path(__file__).resolve().parent / "data" / "dialogue_bot", 5)
    assert replay > 0 and carried > 0 and predict > 0
