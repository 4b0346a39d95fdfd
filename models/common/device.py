"""Device selection: ``auto`` prefers CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(choice: str = "auto") -> torch.device:
    """Resolve a ``--device`` choice to a torch device.

    ``auto`` never fails; an explicit accelerator that is absent raises ``ValueError``
    so a user who asked for a GPU is told rather than silently run on the CPU.
    """
    name = choice.strip().lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {choice!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {choice!r} requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                "use --device cpu or --device auto"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {choice!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    if name == "mps" and not _mps_available():
        raise ValueError("device 'mps' requested but Apple MPS is not available; use --device cpu or auto")
    return torch.device(name)


def device_description(dev: torch.device | str) -> str:
    """Human-readable device label for the header, e.g. ``GPU NVIDIA H100 80GB, 79.1 GiB``."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"GPU {props.name}, {props.total_memory / 2**30:.1f} GiB"
    if dev.type == "mps":
        return "GPU Apple MPS"
    if dev.type == "meta":
        return "meta (no storage)"
    return "CPU"
