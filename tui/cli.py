"""The ``tradedesk`` command line. Headless commands never import textual."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine.core import settings as settings_mod
from engine.core.secrets import MissingCredentials
from engine.core.settings import Settings, SettingsError
from engine.execution.ledger import LedgerError

log = logging.getLogger("tradedesk")


def _common(p: argparse.ArgumentParser, sub: bool = False) -> None:
    # On subcommands the defaults are suppressed so `tradedesk --config X replay ...` and
    # `tradedesk replay --config X ...` both work (argparse would otherwise reset them).
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    p.add_argument("--config", metavar="PATH", default=d(None),
                   help="settings file (default: ./settings.toml, then the user config dir)")
    p.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=d([]), dest="overrides",
                   help="override a setting (repeatable)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=d(None),
                   help="model device (overrides models.device)")
    p.add_argument("--no-load-models", action="store_true", default=d(False),
                   help="start with fresh models, ignore checkpoints")
    p.add_argument("--headless", action="store_true", default=d(False),
                   help="no UI: a status line on stderr every few seconds")
    p.add_argument("--log-file", metavar="PATH", default=d(None),
                   help="log file (default: <data_dir>/logs/tradedesk.log)")
    p.add_argument("--summary-json", metavar="FILE", default=d(None), help="write the run's summary JSON here on exit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradedesk",
        description="Keyboard-driven terminal trading desk for crypto. Without a command: the live desk (paper).",
    )
    _common(parser)
    _live_options(parser)
    parser.add_argument("--live", action="store_true",
                        help="trade real orders through ccxt (keys from TRADEDESK_API_KEY / TRADEDESK_API_SECRET; "
                             "asks for a typed confirmation; live.sandbox picks the testnet)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("replay", help="the desk (or headless engine) over recorded data")
    _common(p, sub=True)
    p.add_argument("paths", nargs="+", metavar="PATH", help="recordings (<recv_ns> <json> lines, gzip or plain)")
    p.add_argument("--speed", default="1", help="multiple of real time, or 'max' (default 1)")
    p.add_argument("--export-bars", metavar="DIR", help="write one CSV of bars per symbol and timeframe")

    p = sub.add_parser("record", help="capture the live streams losslessly to a replayable file")
    _common(p, sub=True)
    p.add_argument("--out", metavar="PATH", required=True, help="recording to write (.gz for gzip)")
    p.add_argument("--minutes", type=float, help="stop after this many minutes (default: until Ctrl-C)")
    _live_options(p, sub=True)

    p = sub.add_parser("demo", help="the desk replaying the public sample recording")
    _common(p, sub=True)
    p.add_argument("--samples", metavar="DIR", help="folder with the sample files (else the configured one, else download)")
    p.add_argument("--speed", default="1", help="multiple of real time, or 'max' (default 1)")

    p = sub.add_parser("backtest", help="headless replay at max speed with the full engine, then a report "
                                        "beside flat, buy-and-hold and random entries")
    _common(p, sub=True)
    p.add_argument("paths", nargs="+", metavar="PATH", help="recordings")
    p.add_argument("--report", metavar="FILE", help="write the report as JSON")
    p.add_argument("--walk-forward", type=int, metavar="K",
                   help="split the data into K folds by market time; evaluate each fold after the first out of "
                        "sample: models that learned on the earlier folds vs fresh ones vs the baselines")
    p.add_argument("--from-checkpoints", action="store_true",
                   help="start from the desk's current checkpoints (read-only) instead of fresh models")
    p.add_argument("--save-checkpoints", metavar="DIR", help="write the models as they end up into DIR")

    p = sub.add_parser("synth", help="write a synthetic session with a known answer (planted lead-lag or null)")
    _common(p, sub=True)
    # Checked by cmd_synth, not argparse, so a bad value is one line naming the argument.
    p.add_argument("--market", metavar="planted|null",
                   help="planted: book imbalance and taker flow predict ETHUSDT's next 30 s; null: the same "
                        "book and flow over a martingale price (required)")
    p.add_argument("--minutes", metavar="N", help="market minutes to generate, > 0, at most a day (required)")
    p.add_argument("--seed", metavar="S", help="seed, an integer >= 0 (required)")
    p.add_argument("--out", metavar="FILE", help="session to write (.gz for gzip); folders are created (required)")
    p.add_argument("--strength", metavar="K", default="1",
                   help="planted drift as a multiple of 2e-4 per second per unit of pressure, >= 0 (default 1)")

    p = sub.add_parser("train", help="offline pre-training of all three models (recordings), and of the CNN on "
                                     "kline / aggTrades dumps, with an out-of-sample validation report")
    _common(p, sub=True)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="recordings, Binance kline/aggTrades CSV dumps (zipped or not), or folders of them")
    p.add_argument("--epochs", type=int, help="passes over the samples (default training.epochs)")

    p = sub.add_parser("models", help="list model checkpoints")
    _common(p, sub=True)

    p = sub.add_parser("bench", help="the benchmark suite (BENCH.md figures)")
    _common(p, sub=True)
    p.add_argument("--json", metavar="FILE", help="write every figure and the environment as JSON")
    p.add_argument("--quick", action="store_true", help="a short variant (under a minute)")
    p.add_argument("--data", metavar="DIR", default="../shared/data/binance-spot",
                   help="folder with the R1 recordings (default ../shared/data/binance-spot)")
    return parser


def _live_options(p: argparse.ArgumentParser, sub: bool = False) -> None:
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    p.add_argument("--max-seconds", type=float, metavar="S", default=d(None),
                   help="live: stop after S seconds (default: run until Ctrl-C)")
    p.add_argument("--until-closed", action="store_true", default=d(False),
                   help="live: stop once the exchange has closed the stream and refuses a reconnect")


class QuietFileHandler(logging.FileHandler):
    """A log file that cannot be written (disk full, removed folder) costs one line on stderr,
    not a traceback per record: the program carries on, the log just has a hole."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            exc = sys.exc_info()[1]
            with contextlib.suppress(OSError):
                print(f"tradedesk: cannot write the log {self.baseFilename} ({exc}); carrying on without it",
                      file=sys.stderr)


class LogFileError(Exception):
    """The log file cannot be opened: named, with the reason."""


def setup_logging(cfg: Settings, log_file: str | None, headless: bool) -> Path:
    path = Path(log_file) if log_file else cfg.data_dir() / "logs" / "tradedesk.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers: list[logging.Handler] = [QuietFileHandler(path, encoding="utf-8")]
    except (FileExistsError, NotADirectoryError):
        raise LogFileError(f"log file {path}: a file stands where its folder should be") from None
    except OSError as exc:
        raise LogFileError(f"log file {path}: {exc.strerror or exc}") from None
    if headless:
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        handlers.append(err)
    logging.basicConfig(level=cfg.general.log_level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from engine.core.secrets import install as install_redaction

    install_redaction()  # API keys in the environment never reach a log line or a traceback
    return path


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = list(args.overrides)
    if getattr(args, "device", None):
        overrides.append(f"models.device={args.device!r}".replace("'", '"'))
    if getattr(args, "no_load_models", False):
        overrides.append("models.load_checkpoints=false")
    return settings_mod.load(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "live", False) and args.command is not None:
        print(f"tradedesk: --live trades on the live desk only, not with `{args.command}`", file=sys.stderr)
        return 2
    try:
        cfg = load_settings(args)
    except SettingsError as exc:
        print(f"tradedesk: bad settings: {exc}", file=sys.stderr)
        return 2
    try:
        setup_logging(cfg, args.log_file, args.headless or args.command not in (None, "demo", "replay"))
    except LogFileError as exc:
        print(f"tradedesk: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "replay":
            return cmd_replay(args, cfg, [Path(p) for p in args.paths])
        if args.command == "demo":
            return cmd_demo(args, cfg)
        if args.command == "record":
            return cmd_record(args, cfg)
        if args.command == "backtest":
            return cmd_backtest(args, cfg)
        if args.command == "synth":
            return cmd_synth(args, cfg)
        if args.command == "train":
            return cmd_train(args, cfg)
        if args.command == "models":
            return cmd_models(args, cfg)
        if args.command == "bench":
            return cmd_bench(args, cfg)
        if args.command is None:
            return cmd_live(args, cfg)
    except (ValueError, OSError, LedgerError, MissingCredentials) as exc:
        print(f"tradedesk: {exc}", file=sys.stderr)
        return 2
    parser.print_help()
    return 2


# ---------------------------------------------------------------------------- commands


def cmd_live(args: argparse.Namespace, cfg: Settings) -> int:
    """The desk (or headless engine) on live public market data; no API key needed."""
    if getattr(args, "live", False):
        from engine.core.secrets import load_credentials

        load_credentials()  # no keys: stop here, naming the variables, before anything starts
        if args.headless and not confirm_live_on_terminal(cfg):
            print("tradedesk: live trading not confirmed; nothing started", file=sys.stderr)
            return 2
    if args.headless:
        summary = asyncio.run(_headless_live(cfg, args))
        return 0 if summary is not None else 1
    from tui.app import SWITCH_TO_DEMO, run_desk

    session = live_session_from_args(cfg, args)
    rc = run_desk(cfg, session)
    if rc == SWITCH_TO_DEMO:
        print("tradedesk: live exchange unreachable: opening the sample replay", file=sys.stderr)
        # The demo's own options on a copy, not grafted onto the live command's namespace.
        return cmd_demo(argparse.Namespace(**{**vars(args), "samples": None, "speed": "1"}), cfg)
    return rc


def cmd_record(args: argparse.Namespace, cfg: Settings) -> int:
    """Headless live session that writes every frame and snapshot to ``--out``."""
    from engine.market.recorder import Recorder

    if args.minutes is not None and not args.minutes > 0:
        raise ValueError(f"--minutes {args.minutes}: expected a positive number")
    recorder = Recorder(Path(args.out))
    summary = asyncio.run(_headless_live(cfg, args, recorder=recorder, with_models=False))
    if summary is not None:
        rec = summary.get("recording", {})
        print(f"recorded {rec.get('lines', 0)} lines ({rec.get('snapshots', 0)} snapshots) to {args.out}; "
              f"replay with: tradedesk replay {args.out}", file=sys.stderr)
    return 0 if summary is not None else 1


def live_session_from_args(cfg: Settings, args: argparse.Namespace, recorder: Any = None,
                           with_models: bool = True) -> Any:
    """The kernel's live session for these command-line options."""
    from engine.kernel import live_session

    max_s = getattr(args, "max_seconds", None)
    if getattr(args, "minutes", None) is not None:
        max_s = args.minutes * 60 if max_s is None else min(max_s, args.minutes * 60)
    return live_session(cfg, live_orders=bool(getattr(args, "live", False)),
                        confirmed=bool(getattr(args, "live", False)) and args.headless,  # typed on the terminal
                        models=with_models, recorder=recorder, max_seconds=max_s,
                        until_closed=bool(getattr(args, "until_closed", False)))


async def _headless_live(cfg: Settings, args: argparse.Namespace, recorder: Any = None,
                         with_models: bool = True) -> dict[str, Any] | None:
    from engine.runs.headless import Stopwatch, write_summary
    from engine.runs.live_driver import live_status_loop

    session = live_session_from_args(cfg, args, recorder, with_models)
    engine, driver = session.engine, session.live
    watch = Stopwatch()
    await _drive(driver, live_status_loop(engine))
    if engine.executor.name == "live":
        await engine.executor.close()  # the ccxt session belongs to this loop
    engine.shutdown()
    summary = engine.summary(watch.elapsed())
    summary.update(driver.summary_extra())
    summary["completed"] = driver.done
    if args.summary_json:
        write_summary(Path(args.summary_json), summary)
    print(_one_line_summary(summary) + f", reconnects {summary['feed']['reconnects']}", file=sys.stderr)
    return summary


def cmd_backtest(args: argparse.Namespace, cfg: Settings) -> int:
    import json

    from engine.runs.backtest import render, run_backtest
    from engine.runs.headless import write_summary

    paths = [Path(p) for p in args.paths]
    for p in paths:
        if not p.is_file():
            print(f"tradedesk backtest: no such recording: {p}", file=sys.stderr)
            return 2
    ckpt_from = None
    if args.from_checkpoints:
        from engine.learning.host import desk_checkpoints

        ckpt_from = desk_checkpoints(cfg)
    save_to = Path(args.save_checkpoints) if args.save_checkpoints else None
    if args.walk_forward is not None:
        from engine.runs.walk_forward import render_walk_forward, walk_forward

        if args.walk_forward < 2:
            print(f"tradedesk backtest: --walk-forward {args.walk_forward}: needs at least 2 folds", file=sys.stderr)
            return 2
        wf = walk_forward(cfg, paths, args.walk_forward, checkpoints_from=ckpt_from, save_to=save_to,
                          progress=sys.stderr)
        rep = wf.report
        print(render_walk_forward(rep))
    else:
        watch = time.perf_counter()
        run = run_backtest(cfg, paths, checkpoints_from=ckpt_from, save_to=save_to)
        rep = run.report
        wall = time.perf_counter() - watch
        start, end = rep["run"]["start_ns"], rep["run"]["end_ns"]
        speed = f"replayed {((end - start) / 1e9 if start else 0):.0f} s of market time in {wall:.1f} s"
        print(render(rep, [speed] + ([f"checkpoints written: {run.saved}"] if run.saved else [])))
        if args.summary_json:
            write_summary(Path(args.summary_json), run.summary)
    if args.report:
        Path(args.report).write_text(json.dumps(rep, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


def cmd_synth(args: argparse.Namespace, cfg: Settings) -> int:
    """Write a synthetic session (``engine.testing.synth_market``) and print what it measures."""
    import math

    from engine.testing.synth_market import MARKETS, MAX_MINUTES, generate

    def bad(arg: str, value: object, expected: str) -> int:
        shown = "missing" if value is None else repr(value)
        print(f"tradedesk synth: {arg} {shown}: expected {expected}", file=sys.stderr)
        return 2

    if args.market not in MARKETS:
        return bad("--market", args.market, " or ".join(MARKETS))
    try:
        minutes = float(args.minutes)
    except (TypeError, ValueError):
        minutes = math.nan
    if not (math.isfinite(minutes) and 0 < minutes <= MAX_MINUTES):
        return bad("--minutes", args.minutes, f"a number of minutes > 0, at most {MAX_MINUTES}")
    try:
        seed = int(args.seed)
    except (TypeError, ValueError):
        seed = -1
    if seed < 0:
        return bad("--seed", args.seed, "an integer >= 0")
    try:
        strength = float(args.strength)
    except (TypeError, ValueError):
        strength = math.nan
    if not (math.isfinite(strength) and strength >= 0):
        return bad("--strength", args.strength, "a number >= 0")
    if not args.out:
        return bad("--out", None, "a file to write")
    summary = generate(Path(args.out), args.market, minutes, seed, strength=strength)
    print(summary.line())
    if args.summary_json:
        from engine.runs.headless import write_summary

        write_summary(Path(args.summary_json), summary.as_dict())
    return 0


def cmd_train(args: argparse.Namespace, cfg: Settings) -> int:
    import json

    from engine.learning.pretrain import TrainInputError, iter_files, train

    try:
        rep = train(cfg, iter_files(args.paths), args.epochs or cfg.training.epochs)
    except TrainInputError as exc:
        print(f"tradedesk train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rep, indent=2, default=str))
    return 0


def cmd_models(args: argparse.Namespace, cfg: Settings) -> int:
    """Every checkpoint file (the ``.prev.pt`` backups too) with the verdict loading gives it."""
    from engine.learning.host import checkpoint_verdicts, desk_checkpoints
    from models.common.checkpoint import quarantined

    folder = desk_checkpoints(cfg)
    rows = checkpoint_verdicts(cfg, folder)
    held = quarantined(folder)
    if held:
        print(f"{len(held)} refused file(s) kept in {folder / 'quarantine'} (each with a .reason beside it)")
    if not rows:
        print(f"no checkpoints in {folder} (models start untrained; they are saved after training)")
        return 0
    print(f"{'model':6} {'preset':6} {'params':>11} {'device':14} {'step':>7}  {'created':20} metrics / file")
    for r in rows:
        if "error" in r:
            print(f"{'?':6} {'':6} {'':>11} {'':14} {'':>7}  {'':20} {Path(r['path']).name}: REFUSED ({r['error']})")
            continue
        metrics = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["metrics"].items())
        print(f"{r['model']:6} {r['preset']:6} {r['parameters']:>11,} {str(r['device'])[:14]:14} {r['step']:>7}  "
              f"{str(r['created'])[:20]:20} {metrics} {Path(r['path']).name}")
    return 0


def cmd_bench(args: argparse.Namespace, cfg: Settings) -> int:
    import json

    from engine.runs import benchmarks as bench
    from tui.desk_bench import bench_desk

    data = Path(args.data)
    report = bench.run(cfg, data, quick=args.quick,
                       extra_steps=(("desk (B10, B12)", lambda: bench_desk(data, args.quick)),))
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


def cmd_demo(args: argparse.Namespace, cfg: Settings) -> int:
    from engine.runs.samples import SampleError, find_or_download_samples

    try:
        paths = find_or_download_samples(cfg, args.samples)
    except SampleError as exc:
        print(f"tradedesk demo: {exc}", file=sys.stderr)
        return 2
    return cmd_replay(args, cfg, paths)


def cmd_replay(args: argparse.Namespace, cfg: Settings, paths: list[Path]) -> int:
    from engine.market.capture import CaptureError
    from engine.runs.replay import parse_speed

    speed = parse_speed(args.speed)
    for p in paths:
        if not p.is_file():
            raise CaptureError(f"no such recording: {p}")
    if args.headless:
        summary = asyncio.run(_headless_replay(cfg, paths, speed, args))
        return 0 if summary is not None else 1
    from engine.kernel import replay_session
    from tui.app import run_desk

    # linger: orders pressed after the data ends still fill on the last book
    session = replay_session(cfg, paths, speed, linger=True)
    return run_desk(cfg, session)


def confirm_live_on_terminal(cfg: Settings, stdin: Any = None, out: Any = None) -> bool:
    """Ask for the live confirmation phrase on the terminal (headless ``--live``)."""
    stdin = stdin or sys.stdin
    out = out or sys.stderr
    phrase = f"LIVE {cfg.live.exchange.upper()}" + (" TESTNET" if cfg.live.sandbox else "")
    where = "the TESTNET (sandbox)" if cfg.live.sandbox else "REAL MONEY"
    print(f"tradedesk --live: orders will be sent to {cfg.live.exchange} with {where}.\n"
          f"Type {phrase!r} to confirm: ", end="", file=out, flush=True)
    line = stdin.readline()
    return line.strip() == phrase


async def _headless_replay(cfg: Settings, paths: list[Path], speed: float | None, args: argparse.Namespace) -> dict[str, Any] | None:
    from engine.kernel import replay_session
    from engine.runs.headless import Stopwatch, export_bars, status_loop, write_summary

    session = replay_session(cfg, paths, speed)
    engine, replay = session.engine, session.replay
    watch = Stopwatch()
    await _drive(replay, status_loop(engine))
    engine.shutdown()
    summary = engine.summary(watch.elapsed())
    summary["parser"] = replay.parser.stats.as_dict()
    summary["reader"] = {"lines": replay.lines, **replay.counters}
    summary["warnings"] = list(replay.warnings)
    summary["completed"] = replay.done
    if args.summary_json:
        write_summary(Path(args.summary_json), summary)
    if getattr(args, "export_bars", None):
        export_bars(engine, Path(args.export_bars))
    print(_one_line_summary(summary), file=sys.stderr)
    return summary


def _one_line_summary(s: dict[str, Any]) -> str:
    return (f"done: {s['messages']} messages, {s['trades']} trades, gaps {s['gaps_detected']}, "
            f"resyncs {s['book_resyncs']}, book {s['book_state']}, fills {s['fills']}, "
            f"realised PnL {s['realised_pnl']}, {s['msgs_per_s']} msgs/s")


async def _drive(driver: Any, status: Any) -> None:
    """Run a feed driver headless with its status loop until it ends or Ctrl-C stops it."""
    task = asyncio.create_task(driver.run())
    status_task = asyncio.create_task(status)
    _install_sigint(task)
    try:
        await task
    except asyncio.CancelledError:
        print("tradedesk: interrupted; writing the summary", file=sys.stderr)
    finally:
        status_task.cancel()


def _install_sigint(task: asyncio.Task[Any]) -> None:
    """First Ctrl-C stops cleanly (summary, ledger, checkpoints); the second forces exit."""
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def on_sigint() -> None:
        hits["n"] += 1
        if hits["n"] == 1:
            task.cancel()
        else:
            os._exit(130)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
