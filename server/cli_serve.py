"""`qmx serve`: run the daemon (REST, WebSocket, dashboard, worker processes) until a signal.

Prints ``QuantMindX listening on http://HOST:PORT`` once it accepts connections (with
``--port 0``, the port the OS chose). SIGTERM or SIGINT: stop accepting, close every WebSocket
with 1001, end running backtests as ``interrupted``, stop all child processes, exit 0 within 10 s.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

#: Seconds HTTP handlers still running at shutdown get to finish (WebSockets are closed first).
HANDLER_GRACE_S = 1.0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer 0-65535 (0: any free port), got {text!r}")
    return port


def _workers(text: str) -> int:
    try:
        workers = int(text)
    except ValueError:
        workers = 0
    if workers < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `qmx serve`."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=_port, default=8000,
                        help="TCP port (default 8000; 0 picks a free port and prints it)")
    parser.add_argument("--workers", type=_workers, default=None,
                        help=f"backtest worker processes (default: CPU count, here {os.cpu_count()})")
    parser.add_argument("--data-dir", default=None,
                        help="market data, SQLite run store and logs (default: the engine's data dir)")
    parser.add_argument("--diagnostics", action="store_true",
                        help="enable the `bench` topic and POST /api/diagnostics/burst (benchmarks)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    if args.data_dir is None:
        from engine.store import default_data_dir  # noqa: PLC0415 - only when no --data-dir

        args.data_dir = str(default_data_dir())
    workers = args.workers or os.cpu_count() or 1
    problem = _data_dir_problem(args.data_dir)
    if problem is not None:
        print(f"qmx serve: argument --data-dir: {problem}", file=sys.stderr)
        return 2
    try:  # bind before starting any process, so a taken port fails fast and cleanly
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(f"qmx serve: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    with sock:
        return asyncio.run(_serve(sock, args.host, workers, args.data_dir, args.diagnostics))


def _data_dir_problem(data_dir: str) -> str | None:
    """Why ``data_dir`` cannot hold the store, the logs and market data, or None (creates it)."""
    path = Path(data_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create directory {str(path)!r}: {exc.strerror or exc}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"directory {str(path)!r} is not writable"
    return None


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def _serve(sock: socket.socket, host: str, workers: int, data_dir: str,
                 diagnostics: bool) -> int:
    from aiohttp import web  # noqa: PLC0415 - keep `qmx --help` fast

    from server.app import make_app  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(data_dir, workers, diagnostics=diagnostics),
                           handle_signals=False, shutdown_timeout=HANDLER_GRACE_S,
                           access_log=None)
    try:
        await runner.setup()  # starts the daemon (cleanup_ctx) before we accept anything
    except Exception as exc:  # a process that cannot start: one line, not a traceback
        print(f"qmx serve: the daemon could not start: {type(exc).__name__}: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    try:
        await web.SockSite(runner, sock).start()
        print(f"QuantMindX listening on http://{host}:{sock.getsockname()[1]}", flush=True)
        await stop.wait()
        print("QuantMindX shutting down", flush=True)
    finally:
        # Order (aiohttp): stop listening -> on_shutdown (close WebSockets with 1001) ->
        # handlers get HANDLER_GRACE_S -> cleanup_ctx (daemon stops its processes).
        await runner.cleanup()
    return 0
