"""Self-describing checkpoints: data, never code.

A checkpoint is a ``torch.save``'d dict of tensors and plain values only (state dict,
config, feature schema, format version, kind, preset, counters, metrics, created time),
read back with ``torch.load(weights_only=True)`` so a crafted pickle cannot run code.
Writes are atomic (temp file in the same directory, fsync, ``os.replace``) and the
previous file is kept as ``<name>.prev.pt`` so a refused load can fall back to it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from models.common import schema

FORMAT = "tradedesk-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint was refused; ``reason`` says why in words a user can act on."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class NonFiniteWeightsError(CheckpointError):
    """Refused to save (or load) weights holding NaN or infinity."""


def previous_path(path: str | os.PathLike[str]) -> Path:
    """``models/cnn.pt`` -> ``models/cnn.prev.pt``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.prev{p.suffix or '.pt'}")


def plain(obj: Any) -> Any:
    """Config values as JSON-like data (tuples -> lists), for storage and comparison."""
    return json.loads(json.dumps(obj, default=str))


def _nonfinite_tensor(tree: Any, prefix: str = "") -> str | None:
    """Name of the first floating tensor in ``tree`` holding NaN/inf, else None."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            return prefix or "<tensor>"
        return None
    items: Iterable[tuple[Any, Any]]
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return None
    for k, v in items:
        bad = _nonfinite_tensor(v, f"{prefix}.{k}" if prefix else str(k))
        if bad:
            return bad
    return None


def _to_cpu(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, Mapping):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree


def build_payload(
    *,
    kind: str,
    preset: str,
    config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    extra: Mapping[str, Any] | None = None,
    counters: Mapping[str, int | float] | None = None,
    metrics: Mapping[str, float] | None = None,
    parameters: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """The checkpoint dict (plain data + CPU tensors)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "preset": preset,
        "config": plain(dict(config)),
        "schema": schema.describe(),
        "state_dict": _to_cpu(dict(state_dict)),
        "extra": _to_cpu(dict(extra or {})),
        "counters": dict(counters or {}),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "parameters": int(parameters),
        "device": device,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),  # TorchVersion is not plain data
    }


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Atomically write ``payload`` to ``path``, keeping the old file as ``.prev``.

    Raises :class:`NonFiniteWeightsError` (and writes nothing) when any tensor is NaN/inf.
    A crash at any point leaves either the old or the new file, never a partial one.
    """
    path = Path(path)
    bad = _nonfinite_tensor({"state_dict": payload.get("state_dict"), "extra": payload.get("extra")})
    if bad:
        raise NonFiniteWeightsError(path, f"refusing to save non-finite weights ({bad})")
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(payload), f)
            f.flush()
            os.fsync(f.fileno())
        # Keep the current file as .prev, but only if it is at least a whole zip archive:
        # rotating a corrupt file in would destroy the good .prev it is meant to back up.
        if path.exists() and zipfile.is_zipfile(path):
            prev, link = previous_path(path), path.with_name(f".{path.name}.prev.tmp")
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)  # a hard link: path keeps existing throughout
            except OSError:
                import shutil

                shutil.copyfile(path, link)
            os.replace(link, prev)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _clear_dead_temps(path: Path) -> None:
    """Remove the temp files of saves whose process died mid-write (their name holds the pid)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # alive but not ours (EPERM): leave it
            pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Read and validate the container (format, version, schema, finiteness); no model checks."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (zero bytes): an interrupted copy?")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(path, "not a torch zip archive: truncated, corrupt or not a checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # weights_only refused an object: this is how a code-carrying pickle ends.
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln or "WeightsUnpickler" in ln]
        why = lines[0] if lines else type(exc).__name__
        raise CheckpointError(path, f"refused: holds objects that are not plain data ({why})") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... on damaged archives
        raise CheckpointError(path, f"unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(path, "not a tradedesk checkpoint (format marker missing)")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(path, "format version missing")
    if version > FORMAT_VERSION:
        raise CheckpointError(path, f"written by a newer tradedesk (format {version} > {FORMAT_VERSION}); upgrade")
    diff = schema_differences(data.get("schema"), schema.describe())
    if diff:
        raise CheckpointError(path, "feature schema mismatch: " + "; ".join(diff))
    if not isinstance(data.get("state_dict"), dict):
        raise CheckpointError(path, "state_dict missing")
    if not mmap:
        bad = _nonfinite_tensor({"state_dict": data["state_dict"], "extra": data.get("extra")})
        if bad:
            raise NonFiniteWeightsError(path, f"holds non-finite weights ({bad})")
    return data


def schema_differences(stored: Any, current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a stored and the current feature schema."""
    if not isinstance(stored, Mapping):
        return ["checkpoint carries no feature schema"]
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if plain(a) != plain(b):
            out.append(f"{key}: checkpoint {_short(a)} vs this build {_short(b)}")
    return out


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any], fields: tuple[str, ...]) -> list[str]:
    """Differences in the given config fields (those that shape the state dict)."""
    out = []
    for key in fields:
        a, b = plain(stored.get(key)), plain(current.get(key))
        if a != b:
            out.append(f"{key}: checkpoint {a!r} vs model {b!r}")
    return out


def _short(v: Any) -> str:
    if isinstance(v, list | tuple) and len(v) > 4:
        return f"{len(v)} items"
    return repr(v)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    kind: str,
    preset: str,
    config: Mapping[str, Any],
    arch_fields: tuple[str, ...],
) -> dict[str, Any]:
    """Read ``path`` and check it belongs to this model; raises :class:`CheckpointError`."""
    data = read_checkpoint(path)
    if data.get("kind") != kind:
        raise CheckpointError(path, f"model kind mismatch: checkpoint is {data.get('kind')!r}, expected {kind!r}")
    if data.get("preset") != preset:
        raise CheckpointError(path, f"size preset mismatch: checkpoint is {data.get('preset')!r}, model is {preset!r}")
    diff = config_differences(data.get("config") or {}, plain(dict(config)), arch_fields)
    if diff:
        raise CheckpointError(path, "config mismatch: " + "; ".join(diff))
    return data


def list_checkpoints(directory: str | os.PathLike[str], *, include_previous: bool = False) -> list[dict[str, Any]]:
    """One row per ``*.pt`` for ``tradedesk models``; unreadable files get an ``error``.

    Reads with ``mmap=True`` so listing a 1.6 GB checkpoint does not load its weights.
    """
    rows: list[dict[str, Any]] = []
    d = Path(directory)
    if not d.is_dir():
        return rows
    for p in sorted(d.glob("*.pt")):
        if p.name.endswith(".prev.pt") and not include_previous:
            continue
        row: dict[str, Any] = {"path": str(p), "size_bytes": p.stat().st_size}
        try:
            data = read_checkpoint(p, mmap=True)
        except CheckpointError as exc:
            row["error"] = exc.reason
        else:
            counters = data.get("counters") or {}
            row.update(
                model=data.get("kind"),
                preset=data.get("preset"),
                parameters=data.get("parameters"),
                device=data.get("device"),
                step=counters.get("training_steps", 0),
                created=data.get("created"),
                metrics=data.get("metrics") or {},
                counters=counters,
            )
        rows.append(row)
    return rows
