"""The toy task of notebook 01: FiLM beats conditional biasing and concatenation."""
import pytest
import torch

from filmlib.toy import ConditionedNet, ToyTask, train_toy


def test_task_is_deterministic_and_balanced():
    task = ToyTask()
    x1, t1, y1 = task.sample(2000, seed=3)
    x2, t2, y2 = task.sample(2000, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert 0.4 < y1.float().mean() < 0.6 and len(t1.unique()) == task.num_tasks


def test_models_have_comparable_size():
    task = ToyTask()
    sizes = {k: sum(p.numel() for p in ConditionedNet(k, task).parameters()) for k in ("film", "bias", "concat")}
    assert sizes["film"] == sizes["bias"] and abs(sizes["concat"] - sizes["film"]) < 0.05 * sizes["film"]
    with pytest.raises(ValueError, match="kind"):
        ConditionedNet("sum", task)


def test_film_beats_bias_and_concatenation():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # tiny matmuls: one thread is fastest
    try:
        acc = {k: train_toy(k, steps=800)["final_accuracy"] for k in ("film", "bias", "concat")}
    finally:
        torch.set_num_threads(threads)
    assert acc["film"] > 0.83
    assert acc["film"] > max(acc["bias"], acc["concat"]) + 0.04, acc
