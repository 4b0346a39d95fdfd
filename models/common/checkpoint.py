"""Self-describing checkpoints: data, never code.

A checkpoint is a ``torch.save``'d dict of tensors and plain values only (state dict,
config, feature schema, format version, kind, preset, counters, metrics, created time),
read back with ``torch.load(weights_only=True)`` so a crafted pickle cannot run code.
Writes are atomic (temp file in the same directory, fsync, ``os.replace``) and the
previous file is kept as ``<name>.prev.pt`` so a refused load can fall back to it.

Every field is checked on load (:func:`read_checkpoint` for the container, the agent for
its own shapes); a refusal names the file and the field. A sha256 over the whole payload
(tensor bytes and plain values, in a stable order) is written at save and verified at
load, so flipped bits are refused instead of trained on. A current file that would be
refused is never rotated over a good ``.prev.pt``: it is moved to ``quarantine/`` with
a ``.reason`` text beside it. Named failpoints inside the save (:data:`SAVE_POINTS`)
let a crash harness stop the process at an exact step.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from models.common import schema

FORMAT = "tradedesk-checkpoint"
#: 2: a ``checksum`` field (sha256 of the payload). Format 1 files (no checksum) still load.
FORMAT_VERSION = 2
CHECKSUM_FROM_VERSION = 2
#: Counters are stored as plain ints; anything beyond a signed 64-bit integer is not a count.
MAX_COUNTER = 2**63 - 1
QUARANTINE_DIR = "quarantine"

#: Named points inside :func:`save_checkpoint`, in the order a save reaches them:
#: half of the new archive written to the temp file; the temp file whole and synced;
#: the current file linked to ``.prev.pt`` (or, when it would be refused, to quarantine);
#: the new file moved in, the directory not synced yet.
SAVE_POINTS = ("checkpoint_mid_write", "checkpoint_after_fsync", "checkpoint_after_prev",
               "checkpoint_after_quarantine", "checkpoint_after_replace")

_failpoint: Callable[[str], None] | None = None


def set_failpoint(hook: Callable[[str], None] | None) -> None:
    """Install the hook :func:`save_checkpoint` calls at each of :data:`SAVE_POINTS` (the
    engine passes ``engine.core.failpoints.hit``; tests may pass one that raises). None: off."""
    global _failpoint
    _failpoint = hook


def _hit(name: str) -> None:
    if _failpoint is not None:
        _failpoint(name)


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


# ---------------------------------------------------------------------------- checksum


def payload_digest(payload: Mapping[str, Any]) -> str:
    """sha256 over every field but ``checksum``: tensors by dtype, shape and bytes, plain
    values by type and value, mappings in sorted key order. The same on save and on load
    (also through ``mmap``), whatever order the dict was built in."""
    h = hashlib.sha256()
    _digest_into(h, {k: v for k, v in payload.items() if k != "checksum"})
    return h.hexdigest()


def _digest_into(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        h.update(f"T{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        h.update(b"D%d|" % len(obj))
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            _digest_into(h, k)
            _digest_into(h, obj[k])
    elif isinstance(obj, list | tuple):
        h.update(b"L%d|" % len(obj))
        for v in obj:
            _digest_into(h, v)
    elif isinstance(obj, bool):
        h.update(b"B1|" if obj else b"B0|")
    elif isinstance(obj, int):
        h.update(b"I%d|" % obj)
    elif isinstance(obj, float):
        h.update(b"F" + obj.hex().encode() + b"|")
    elif isinstance(obj, str):
        e = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d|" % len(e) + e)
    elif obj is None:
        h.update(b"N|")
    else:  # weights_only yields nothing else; stay stable anyway
        h.update(f"O{type(obj).__name__}|{obj!r}|".encode())


# ---------------------------------------------------------------------------- save


class _Writer:
    """The temp file as torch.save sees it: passes writes through and reaches the
    ``checkpoint_mid_write`` failpoint once half of the expected bytes are written."""

    def __init__(self, f: Any, expected: int) -> None:
        self.f = f
        self.half = max(1, expected // 2)
        self.written = 0
        self.fired = False

    def write(self, b: Any) -> int:
        n = int(self.f.write(b))
        self.written += n
        if not self.fired and self.written >= self.half:
            self.fired = True
            self.f.flush()  # the half that is written is in the file when the point is reached
            _hit("checkpoint_mid_write")
        return n

    def flush(self) -> None:
        self.f.flush()


def _tensor_bytes(tree: Any) -> int:
    if isinstance(tree, torch.Tensor):
        return int(tree.numel() * tree.element_size())
    if isinstance(tree, Mapping):
        return sum(_tensor_bytes(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return sum(_tensor_bytes(v) for v in tree)
    return 0


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any], *,
                    current_verdict: Callable[[Path], str | None] | None = None) -> Path:
    """Atomically write ``payload`` to ``path`` with its checksum, keeping the old file as ``.prev``.

    The current file becomes ``.prev.pt`` only if ``current_verdict(path)`` (default: the
    container checks of :func:`read_checkpoint`) finds nothing wrong with it; a file that
    would be refused goes to ``quarantine/`` instead, so it can never replace a good backup.
    Raises :class:`NonFiniteWeightsError` (and writes nothing) when any tensor is NaN/inf,
    and ``OSError`` when the file cannot be written (the old files are then untouched).
    A crash at any point leaves either the old or the new file, never a partial one.
    """
    path = Path(path)
    bad = _nonfinite_tensor({"state_dict": payload.get("state_dict"), "extra": payload.get("extra")})
    if bad:
        raise NonFiniteWeightsError(path, f"refusing to save non-finite weights ({bad})")
    body = {k: v for k, v in payload.items() if k != "checksum"}
    version = body.get("format_version")
    if type(version) is int and version < CHECKSUM_FROM_VERSION:  # re-saving a format 1 payload
        body["format_version"] = CHECKSUM_FROM_VERSION
    _check_fields(path, body)  # never write what loading would refuse
    body["checksum"] = {"algorithm": "sha256", "digest": payload_digest(body)}
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(body, _Writer(f, _tensor_bytes(body)))  # type: ignore[arg-type]  # a write()r is enough
            f.flush()
            os.fsync(f.fileno())
        _hit("checkpoint_after_fsync")
        if path.exists():
            reason = (current_verdict or _container_verdict)(path)
            if reason is None:
                _link_over(path, previous_path(path))
                _hit("checkpoint_after_prev")
            else:
                quarantine(path, reason)
                _hit("checkpoint_after_quarantine")
        os.replace(tmp, path)
        _hit("checkpoint_after_replace")
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _container_verdict(path: Path) -> str | None:
    try:
        read_checkpoint(path)
    except CheckpointError as exc:
        return exc.reason
    return None


def _link_over(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` in one rename; ``src`` keeps existing throughout."""
    link = dst.with_name(f".{dst.name}.link.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(src, link)  # a hard link: no copy, and src is untouched
    except OSError:
        shutil.copyfile(src, link)
    os.replace(link, dst)


def quarantine(path: str | os.PathLike[str], reason: str) -> Path:
    """Keep a refused ``path`` as ``quarantine/<stem>.<UTC stamp>.pt`` beside its folder,
    with ``<same>.reason`` saying why; ``path`` itself is left in place (the caller replaces it)."""
    path = Path(path)
    folder = path.parent / QUARANTINE_DIR
    folder.mkdir(exist_ok=True)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    dst = folder / f"{path.stem}.{stamp}{path.suffix or '.pt'}"
    n = 1
    while dst.exists() or dst.with_suffix(".reason").exists():
        dst = folder / f"{path.stem}.{stamp}-{n}{path.suffix or '.pt'}"
        n += 1
    dst.with_suffix(".reason").write_text(
        f"{path}\nrefused {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}: {reason}\n", encoding="utf-8")
    _link_over(path, dst)
    return dst


def quarantined(directory: str | os.PathLike[str]) -> list[Path]:
    """The files kept in ``directory``'s quarantine, oldest name first."""
    d = Path(directory) / QUARANTINE_DIR
    return sorted(p for p in d.glob("*") if p.suffix != ".reason") if d.is_dir() else []


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


# ---------------------------------------------------------------------------- load


def read_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Read and validate the container: format, version, checksum, every common field,
    schema and finiteness (no model checks: those are the agent's). ``mmap`` reads the
    tensors through a memory map (the verdict is the same; the weights are not copied)."""
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
        # (torch's own text goes on to suggest allow-listing the global: not advice to pass on)
        m = re.search(r"GLOBAL ([\w.]+)", str(exc))
        why = f"a pickled reference to {m[1]}, which is never called" if m else type(exc).__name__
        raise CheckpointError(path, f"refused: holds objects that are not plain data ({why})") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... on damaged archives
        raise CheckpointError(path, f"unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(path, "not a tradedesk checkpoint (format marker missing)")
    version = data.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(path, f"format_version = {_short(version)}: expected an integer >= 1")
    if version > FORMAT_VERSION:
        raise CheckpointError(path, f"format_version = {version}: written by a newer tradedesk "
                                    f"(format {version} > {FORMAT_VERSION}); upgrade")
    if version >= CHECKSUM_FROM_VERSION:
        _verify_checksum(path, data)
    _check_fields(path, data)
    diff = schema_differences(data.get("schema"), schema.describe())
    if diff:
        raise CheckpointError(path, "feature schema mismatch: " + "; ".join(diff))
    bad = _nonfinite_tensor({"state_dict": data["state_dict"], "extra": data.get("extra")})
    if bad:
        raise NonFiniteWeightsError(path, f"holds non-finite weights ({bad})")
    return data


def _verify_checksum(path: Path, data: Mapping[str, Any]) -> None:
    c = data.get("checksum")
    if not isinstance(c, Mapping) or c.get("algorithm") != "sha256" or not isinstance(c.get("digest"), str):
        raise CheckpointError(path, f"checksum = {_short(c)}: expected a sha256 digest (format "
                                    f"{data.get('format_version')} files carry one)")
    got = payload_digest(data)
    if got != c["digest"]:
        raise CheckpointError(path, f"checksum: the data does not match its sha256 (stored {c['digest'][:12]}…, "
                                    f"computed {got[:12]}…): flipped bits, a bad copy or an edit")


def _check_fields(path: Path, data: Mapping[str, Any]) -> None:
    """Every common field has the type and range it is written with."""
    def refuse(field: str, value: Any, expected: str) -> None:
        raise CheckpointError(path, f"field {field} = {_short(value)}: expected {expected}")

    for key in ("kind", "preset", "device", "created", "torch_version"):
        if not isinstance(data.get(key), str):
            refuse(key, data.get(key), "a string")
    try:
        _dt.datetime.fromisoformat(data["created"])
    except ValueError:
        refuse("created", data["created"], "an ISO 8601 time")
    for key in ("config", "schema", "state_dict", "extra", "counters", "metrics"):
        if not isinstance(data.get(key), dict):
            if key in ("extra", "counters", "metrics") and key not in data:
                continue  # optional
            refuse(key, data.get(key), "a table")
    params = data.get("parameters")
    if type(params) is not int or not 0 <= params <= MAX_COUNTER:
        refuse("parameters", params, "an integer >= 0")
    for k, v in data["state_dict"].items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            refuse(f"state_dict.{k}", v, "a tensor")
    for k, v in (data.get("counters") or {}).items():
        ok = (type(v) is int and 0 <= v <= MAX_COUNTER) or (type(v) is float and math.isfinite(v))
        if not isinstance(k, str) or not ok:
            refuse(f"counters.{k}", v, "a count (an integer >= 0, below 2**63) or a finite number")
    for k, v in (data.get("metrics") or {}).items():
        if not isinstance(k, str) or type(v) not in (int, float):
            refuse(f"metrics.{k}", v, "a number")


def schema_differences(stored: Any, current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a stored and the current feature schema."""
    if not isinstance(stored, Mapping):
        return ["checkpoint carries no feature schema"]
    out = []
    for key in sorted(set(stored) | set(current), key=str):
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
    if isinstance(v, torch.Tensor):
        return f"a {v.dtype} tensor of shape {tuple(v.shape)}"
    if isinstance(v, Mapping):
        return f"a table of {len(v)} entries"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    kind: str,
    preset: str,
    config: Mapping[str, Any],
    arch_fields: tuple[str, ...],
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read ``path`` (or take ``data`` already read from it) and check it belongs to this
    model; raises :class:`CheckpointError` naming the field."""
    data = read_checkpoint(path) if data is None else data
    if data.get("kind") != kind:
        raise CheckpointError(path, f"model kind mismatch: field kind = {data.get('kind')!r}, expected {kind!r}")
    if data.get("preset") != preset:
        raise CheckpointError(path, f"size preset mismatch: field preset = {data.get('preset')!r}, "
                                    f"model is {preset!r}")
    stored = data.get("config") or {}
    diff = config_differences(stored, plain(dict(config)), arch_fields)
    if diff:
        fields = ", ".join(f"config.{k}" for k in arch_fields
                           if plain(stored.get(k)) != plain(dict(config).get(k)))
        raise CheckpointError(path, "config mismatch: " + "; ".join(diff) + f" (field {fields})")
    return data


def list_checkpoints(directory: str | os.PathLike[str], *, include_previous: bool = False) -> list[dict[str, Any]]:
    """One row per ``*.pt`` for ``tradedesk models``; refused files get an ``error``.

    Runs every container check loading does (checksum and finiteness too), reading the
    tensors through ``mmap`` so a 1.6 GB checkpoint is not copied into memory; the model
    checks (shapes against the network) are the agents' (``models.registry.check_checkpoint``).
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
                data=data,
            )
        rows.append(row)
    return rows
