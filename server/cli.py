"""`qmx`: the command line. Each subcommand lives in its own module and is imported on use,
so `qmx data list` never pays for aiohttp and `qmx serve` never for the terminal renderer."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Sequence

#: subcommand -> (module, one-line help). Each module defines
#: ``add_arguments(parser: argparse.ArgumentParser) -> None`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("server.cli_serve", "start the daemon: REST, WebSocket, dashboard, worker processes"),
    "backtest": ("server.cli_backtest", "run one backtest locally, or on a daemon with --server"),
    "sweep": ("server.cli_sweep", "evaluate a parameter grid and rank the results"),
    "data": ("server.cli_data", "import and list market data in the local store"),
    "bots": ("server.cli_bots", "list, start, stop and kill paper-trading bots on a daemon"),
    "watch": ("server.cli_client", "print a daemon's live event stream"),
    "report": ("server.cli_report", "write a self-contained HTML report of a stored backtest"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (no usage dump) and exits with 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _module(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `qmx` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineParser(prog="qmx", description="QuantMindX backtest-and-trading daemon")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = argv[0] if argv else None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name == chosen:
            _module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    try:
        return int(_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `qmx data list | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
