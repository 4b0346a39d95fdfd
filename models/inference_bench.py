"""Model figures for ``tradedesk bench``: B7 (batch-1 inference vs its floor) and B13 (GPU).

Every result is a plain dict. The floor of a forward pass is
``max(ops x per-op dispatch cost, weight bytes / memory bandwidth)``: a batch-1 forward
either pays the framework's fixed cost per op (small models, CPUs) or reads every weight
once (large models, GPUs). Both rates are measured here, on this machine, in this run,
so the ratio ``p50 / floor`` is comparable across machines.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from models.common.base_agent import Agent
from models.common.device import device_description, select_device
from models.common.inputs import ModelInputs
from models.registry import AGENTS

KINDS = ("cnn", "dqn", "cob")


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """What every result must carry: CPU, cores, Python, torch, threads, device."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device_description(device or torch.device("cpu")),
        "cuda_available": torch.cuda.is_available(),
    }


class _OpCounter(TorchDispatchMode):
    """Counts aten ops reaching the dispatcher (after autograd, i.e. the real kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], Any]) -> int:
    """Aten ops dispatched by one call of ``fn``."""
    with torch.inference_mode(), _OpCounter() as counter:
        fn()
    return counter.ops


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of ``fn`` (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measure_flops_rate(device: torch.device, n: int = 512) -> float:
    """FLOP/s of a square fp32 matmul: an optimistic compute rate for this device/threads."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    reps = 50 if device.type == "cuda" else 5
    best = float("inf")
    with torch.inference_mode():
        torch.mm(a, b)
        for _ in range(3):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            _sync(device)
            best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_dispatch_cost(device: torch.device, n: int = 3000) -> float:
    """Seconds per tiny op (1-element add): the fixed framework/launch cost of any op."""
    a = torch.ones(1, device=device)
    b = torch.ones(1, device=device)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                torch.add(a, b)
            _sync(device)
            best = min(best, (time.perf_counter() - t0) / n)
    return best


def measure_bandwidth(device: torch.device, nbytes: int | None = None) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 1 << 27)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * nbytes / best


def weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def time_calls(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int = 10) -> dict[str, float]:
    """Per-call latency percentiles in ms; synchronises a GPU after every call, as a
    decision waits for its answer."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out[i] = time.perf_counter() - t0
    ms = out * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "iters": iters,
    }


def _example(kind: str, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    inp = ModelInputs.zeros()
    arr = {"cnn": inp.bars, "dqn": inp.dqn_state, "cob": inp.cob}[kind]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(arr.shape).astype(np.float32))
    return (x[None].to(device=device, dtype=dtype),)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def bench_model(
    kind: str,
    preset: str = "small",
    device: str | torch.device = "cpu",
    iters: int = 300,
    *,
    dispatch_s: float | None = None,
    bandwidth: float | None = None,
    flops_rate: float | None = None,
    compile: bool = False,
    variants: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """B7 for one model: p50/p99 per variant, the floor and ``p50 / floor``.

    Variants: ``eager`` (autograd on), ``inference_mode``, ``traced`` (torch.jit.trace +
    freeze), ``agent_predict`` (numpy in -> Prediction out, what the engine pays),
    ``compiled`` (torch.compile, only when asked: it takes long on a CPU) and, on CUDA,
    ``cuda_graph`` and ``cuda_graph_bf16``. A variant that fails is reported with its
    error instead of failing the bench.
    """
    dev = torch.device(device)
    if variants is None:
        variants = ("eager", "inference_mode", "traced", "agent_predict")
        if compile:
            variants += ("compiled",)
        if dev.type == "cuda":
            variants += ("cuda_graph", "cuda_graph_bf16")
    agent = AGENTS[kind](preset=preset, device=dev, seed=0)
    net = agent.actor
    eager_net = agent.learner.eval()  # requires_grad=True: eager pays autograd bookkeeping
    (x,) = _example(kind, dev)
    dispatch_s = dispatch_s if dispatch_s is not None else measure_dispatch_cost(dev)
    bandwidth = bandwidth if bandwidth is not None else measure_bandwidth(dev)
    flops_rate = flops_rate if flops_rate is not None else measure_flops_rate(dev)
    ops = count_ops(lambda: net(x))
    flops = count_flops(lambda: net(x))
    wbytes = weight_bytes(net)
    floor_s = max(ops * dispatch_s, wbytes / bandwidth)
    # Not part of BENCH's floor, reported beside it: a model can be compute-bound (the
    # convolutions over 60-bar windows), and then no runtime gets near the floor above.
    compute_s = flops / flops_rate
    result: dict[str, Any] = {
        "model": kind,
        "preset": preset,
        "device": device_description(dev),
        "params": agent.parameters,
        "ops": ops,
        "weight_bytes": wbytes,
        "dispatch_us": dispatch_s * 1e6,
        "bandwidth_gbs": bandwidth / 1e9,
        "flops": flops,
        "compute_floor_ms": compute_s * 1e3,
        "floor_ms": floor_s * 1e3,
        "floor_bound": "dispatch" if ops * dispatch_s >= wbytes / bandwidth else "bandwidth",
        "variants": {},
    }
    inputs = ModelInputs.zeros()
    for name in variants:
        try:
            fn = _variant(name, kind, agent, net, eager_net, x, dev, inputs)
            r = time_calls(fn, dev, iters)
            floor = floor_s
            if name.endswith("bf16"):  # half the bytes to read; dispatch part unchanged
                floor = max(ops * dispatch_s, wbytes / 2 / bandwidth)
            r["ratio_to_floor"] = r["p50_ms"] / (floor * 1e3)
            r["ratio_to_roofline"] = r["p50_ms"] / (max(floor, compute_s) * 1e3)
            result["variants"][name] = r
        except Exception as exc:  # a variant that cannot run here is a finding, not a crash
            result["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return result


def _variant(
    name: str,
    kind: str,
    agent: Agent,
    net: nn.Module,
    eager_net: nn.Module,
    x: torch.Tensor,
    dev: torch.device,
    inputs: ModelInputs,
) -> Callable[[], Any]:
    if name == "eager":
        return lambda: eager_net(x)
    if name == "inference_mode":

        def run() -> Any:
            with torch.inference_mode():
                return net(x)

        return run
    if name == "traced":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated but still the leanest CPU path
            with torch.no_grad():
                traced = torch.jit.trace(net, (x,), check_trace=False)
                with contextlib.suppress(Exception):
                    traced = torch.jit.freeze(traced)  # folds BatchNorm into the convs

        def run_traced() -> Any:
            with torch.inference_mode():
                return traced(x)

        return run_traced
    if name == "compiled":
        compiled = torch.compile(net, mode="reduce-overhead" if dev.type == "cuda" else "default")
        with torch.inference_mode():
            compiled(x)

        def run_compiled() -> Any:
            with torch.inference_mode():
                return compiled(x)

        return run_compiled
    if name == "agent_predict":
        return lambda: agent.predict(inputs)
    if name in ("cuda_graph", "cuda_graph_bf16"):
        if dev.type != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        import copy

        model = net if name == "cuda_graph" else copy.deepcopy(net).to(torch.bfloat16)
        static_x = x.clone().to(next(model.parameters()).dtype)
        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up kernels/allocator outside the capture
                model(static_x)
        torch.cuda.current_stream(dev).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = model(static_x)

        def replay() -> Any:
            graph.replay()
            return static_out  # keeps the graph's output buffers referenced

        return replay
    raise ValueError(f"unknown variant {name!r}")


def run_b7(
    preset: str = "small",
    device: str = "cpu",
    iters: int = 300,
    threads: int | None = 1,
    compile: bool = False,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    """B7: every model at batch 1, one inference thread (as in the decision path)."""
    dev = select_device(device)
    with _threads(threads if dev.type == "cpu" else None):
        dispatch_s = measure_dispatch_cost(dev)
        bandwidth = measure_bandwidth(dev)
        flops_rate = measure_flops_rate(dev)
        models = [
            bench_model(
                k,
                preset,
                dev,
                iters,
                dispatch_s=dispatch_s,
                bandwidth=bandwidth,
                flops_rate=flops_rate,
                compile=compile,
            )
            for k in kinds
        ]
        env = environment(dev)
    return {
        "figure": "B7",
        "environment": env,
        "preset": preset,
        "dispatch_us": dispatch_s * 1e6,
        "bandwidth_gbs": bandwidth / 1e9,
        "gflops": flops_rate / 1e9,
        "models": models,
    }


def run_b13(iters: int = 200, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """B13 model part: B7 with the ``large`` presets on CUDA; skipped without a GPU."""
    if not torch.cuda.is_available():
        return {"figure": "B13", "skipped": "no CUDA device", "environment": environment()}
    result = run_b7(preset="large", device="cuda", iters=iters, threads=None, kinds=kinds)
    result["figure"] = "B13"
    result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def _format_row(m: dict[str, Any]) -> str:
    parts = [
        f"{m['model']:>3} {m['preset']:<5} {m['params'] / 1e6:7.2f}M floor {m['floor_ms']:.3f} ms ({m['floor_bound']}), compute {m['compute_floor_ms']:.3f} ms"
    ]
    for name, r in m["variants"].items():
        parts.append(
            f"  {name:<16} "
            + (
                f"p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} ms  x{r['ratio_to_floor']:.1f} floor, x{r['ratio_to_roofline']:.1f} roofline"
                if "error" not in r
                else f"error {r['error']}"
            )
        )
    return "\n".join(parts)


def format_report(result: dict[str, Any]) -> str:
    """Short human-readable table of a run_b7/run_b13 result."""
    if result.get("skipped"):
        return f"{result['figure']}: skipped ({result['skipped']})"
    head = (
        f"{result['figure']}: dispatch {result['dispatch_us']:.2f} us/op, "
        f"bandwidth {result['bandwidth_gbs']:.1f} GB/s, {result['gflops']:.0f} GFLOP/s, {result['environment']['device']}"
    )
    return "\n".join([head] + [_format_row(m) for m in result["models"]])


if __name__ == "__main__":
    t = time.perf_counter()
    print(format_report(run_b7()))
    print(f"({time.perf_counter() - t:.1f} s)")
