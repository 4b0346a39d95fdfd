"""The models' part of `tradedesk bench` runs and returns plain, sane numbers (no timing asserts)."""

from __future__ import annotations

import json

import pytest
import torch

from models.inference_bench import bench_model, count_ops, format_report, run_b7, run_b13
from models.registry import build_network


def test_b7_quick_returns_plain_dicts() -> None:
    res = run_b7(iters=20, kinds=("dqn",))
    json.dumps(res)  # plain data only
    m = res["models"][0]
    assert m["model"] == "dqn"
    assert m["ops"] > 5
    assert m["floor_ms"] > 0
    for name in ("eager", "inference_mode", "traced", "agent_predict"):
        v = m["variants"][name]
        assert "error" not in v, v
        assert 0 < v["p50_ms"] <= v["p99_ms"]
        assert v["ratio_to_floor"] > 0
    assert "B7" in format_report(res)


def test_op_count_is_positive_and_bench_survives_a_bad_variant() -> None:
    net = build_network("cob", "small", "cpu").eval()
    assert count_ops(lambda: net(torch.zeros(1, net.config.input_dim))) > 10
    res = bench_model("cob", iters=5, variants=("inference_mode", "cuda_graph"))
    assert "p50_ms" in res["variants"]["inference_mode"]
    if not torch.cuda.is_available():
        assert "error" in res["variants"]["cuda_graph"]


def test_b13_skips_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("has CUDA: covered by the gpu test")
    assert run_b13()["skipped"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_b13_on_cuda() -> None:
    res = run_b13(iters=20, kinds=("dqn", "cnn"))
    for m in res["models"]:
        assert m["preset"] == "large"
        assert "p50_ms" in m["variants"]["inference_mode"], m["variants"]
