"""``main()``: the command line, the event loop, and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn

from .. import __version__
from .._client import Client
from ..errors import BeanstalkError, InvalidArgumentError
from ..protocol import DEFAULT_PRIORITY, DEFAULT_TTR, MAX_JOB_ID, MAX_U32
from ..protocol import _validate as check
from . import _commands as commands
from ._address import DEFAULT_HOST, DEFAULT_PORT, ENV_VAR, Target, resolve_target
from ._context import Context, Output
from ._failures import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    explain,
)

__all__ = ["build_parser", "main"]

PROG = "rxbeanstalk"
DEFAULT_TIMEOUT = 5.0

Handler = Callable[[Context], Awaitable[None]]

_EPILOG = f"""\
server:
  --unix wins over --server, which wins over ${ENV_VAR} (same syntax as --server:
  HOST:PORT, HOST, [IPV6]:PORT or unix:PATH); the default is {DEFAULT_HOST}:{DEFAULT_PORT}.

exit codes:
  {EXIT_OK}    ok
  {EXIT_FAILED}    the command failed (job or tube not found, server draining, ...)
  {EXIT_USAGE}    usage error (bad command, option or value)
  {EXIT_UNREACHABLE}    cannot connect to the server, or it stopped answering
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Report a usage error and exit with code 2 (argparse's own code for it).

        Args:
            message: What argparse found wrong.
        """
        self.exit(EXIT_USAGE, f"{PROG}: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------ argument types


def _tube(text: str) -> str:
    try:
        return check.tube_name(text)
    except InvalidArgumentError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _integer(low: int, high: int | None, what: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a whole number, got {text!r}"
            ) from None
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"{what} must be at least {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be in {low}..{high}, got {value}")
        return value

    return convert


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


_u32 = _integer(0, MAX_U32, "the value")
_job_id = _integer(1, MAX_JOB_ID, "a job id")
_positive = _integer(1, None, "the count")


# ------------------------------------------------------------------------------ the parser


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The same options on the main parser and on every command, so that both
    # `rxbeanstalk --json stats` and `rxbeanstalk stats --json` work. On the commands the
    # defaults are suppressed, so that a command does not undo what came before it.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=default(None),
        help=f"the server (default: ${ENV_VAR}, else {DEFAULT_HOST}:{DEFAULT_PORT})",
    )
    group.add_argument(
        "--unix", metavar="PATH", default=default(None), help="the server's unix socket"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print results as JSON, for scripts",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default(DEFAULT_TIMEOUT),
        help=f"give up connecting, or waiting for a reply, after this long "
        f"(default: {DEFAULT_TIMEOUT:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``rxbeanstalk`` command line.

    Returns:
        The parser; each command's namespace has ``handler`` (a coroutine function
        taking a ``Context``) and, for ``put``, ``prepare`` (run before the loop).
    """
    parser = _Parser(
        prog=PROG,
        description="Inspect and operate a beanstalkd server.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    sub.required = True

    def command(name: str, handler: Handler, summary: str, details: str = "") -> _Parser:
        child: _Parser = sub.add_parser(
            name,
            help=summary,
            description=summary + (f"\n\n{details}" if details else ""),
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _global_options(child, suppress=True)
        child.set_defaults(handler=handler)
        return child

    stats = command(
        "stats",
        commands.stats_command,
        "show the server's statistics, or one tube's",
    )
    stats.add_argument("tube", metavar="TUBE", nargs="?", type=_tube, help="a tube")

    command("tubes", commands.tubes_command, "list every tube")

    put = command(
        "put",
        commands.put_command,
        "put a job (or one job per line) into a tube; print the new ids",
        "The body is taken verbatim: `echo hi | rxbeanstalk put TUBE` puts 'hi\\n'.\n"
        "With --lines each line is a job, without its line end; empty lines are skipped.",
    )
    put.add_argument("tube", metavar="TUBE", type=_tube, help="the tube to put into")
    put.add_argument(
        "body",
        metavar="BODY",
        nargs="?",
        help="the job body; '-' or nothing reads stdin (to its end, before sending)",
    )
    put.add_argument("--lines", action="store_true", help="put one job per line of the input")
    put.add_argument(
        "--pri",
        "--priority",
        dest="pri",
        metavar="N",
        type=_u32,
        default=DEFAULT_PRIORITY,
        help=f"priority, 0 (most urgent) to {MAX_U32} (default: {DEFAULT_PRIORITY})",
    )
    put.add_argument(
        "--delay",
        metavar="SECONDS",
        type=_u32,
        default=0,
        help="seconds before the job is ready (default: 0)",
    )
    put.add_argument(
        "--ttr",
        metavar="SECONDS",
        type=_u32,
        default=DEFAULT_TTR,
        help=f"seconds a worker may hold the job (default: {DEFAULT_TTR})",
    )
    put.set_defaults(prepare=commands.read_bodies)

    peek = command(
        "peek",
        commands.peek_command,
        "show the next ready, delayed or buried job of a tube",
    )
    peek.add_argument("tube", metavar="TUBE", type=_tube, help="the tube")
    peek.add_argument(
        "state",
        nargs="?",
        default="ready",
        choices=("ready", "delayed", "buried"),
        help="which job: the next ready one (default), the next delayed, the oldest buried",
    )

    kick = command(
        "kick",
        commands.kick_command,
        "move up to N buried jobs of a tube (or, if it has none, delayed jobs) to ready",
    )
    kick.add_argument("tube", metavar="TUBE", type=_tube, help="the tube")
    kick.add_argument("bound", metavar="N", type=_u32, help="how many jobs at most")

    delete = command(
        "delete",
        commands.delete_command,
        "delete a job by id",
        "A job reserved by another client cannot be deleted: it reads as not found.",
    )
    delete.add_argument("id", metavar="ID", type=_job_id, help="the job id")

    pause = command("pause", commands.pause_command, "stop reserves from a tube for a while")
    pause.add_argument("tube", metavar="TUBE", type=_tube, help="the tube")
    pause.add_argument("seconds", metavar="SECONDS", type=_u32, help="how long")

    top = command(
        "top",
        commands.top_command,
        "live view of every tube: jobs by state, totals and rates",
        "On a terminal the view is full-screen: q quits (exit code 0), so does SIGTERM;\n"
        "Ctrl-C exits with 130. Otherwise, and with --once, frames are printed one\n"
        "after another as plain text, or as JSON lines with --json.\n\n"
        "Columns: jobs READY, RESERVED, DELAYED and BURIED now; TOTAL jobs ever put\n"
        "into the tube; PUT/S and DEL/S, jobs put and deleted per second since the last\n"
        "frame; WAITING, connections waiting in a reserve; PAUSED, pause time left.",
    )
    top.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_seconds,
        default=1.0,
        help="seconds between refreshes (default: 1)",
    )
    top.add_argument("--once", action="store_true", help="print one plain frame and exit")
    top.add_argument("--iterations", metavar="N", type=_positive, help="exit after N frames")

    drain = command(
        "drain",
        commands.drain_command,
        "reserve and delete (or bury) every job of a tube, with a progress bar on stderr",
        "It stops once the tube had no ready job for --idle seconds; delayed jobs that\n"
        "do not become ready by then stay.",
    )
    drain.add_argument("tube", metavar="TUBE", type=_tube, help="the tube")
    drain.add_argument("--bury", action="store_true", help="bury the jobs instead")
    drain.add_argument(
        "--idle",
        metavar="SECONDS",
        type=_seconds,
        default=1.0,
        help="stop after this long without a ready job (default: 1)",
    )
    drain.add_argument("--limit", metavar="N", type=_positive, help="stop after N jobs")
    drain.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, only the final count"
    )
    return parser


# ------------------------------------------------------------------------------ running


async def _run(args: argparse.Namespace, target: Target) -> None:
    timeout: float = args.timeout
    out = Output(args.json)
    client = Client(
        target.host,
        target.port,
        unix_path=target.unix_path,
        connect_timeout=timeout,
        command_timeout=timeout,
    )
    handler: Handler = args.handler
    try:
        async with client:
            await handler(Context(args, client, str(target), out))
    except BeanstalkError as error:
        raise explain(error, str(target), timeout) from error


def main(argv: list[str] | None = None) -> int:
    """Run the ``rxbeanstalk`` command line.

    Args:
        argv: The arguments after the program name; ``None`` for ``sys.argv[1:]``.

    Returns:
        The exit code: 0 ok, 1 the command failed, 2 usage error, 3 the server cannot
        be reached, 130 interrupted. Failures are reported as one line on stderr.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or EXIT_OK
        return EXIT_USAGE
    try:
        target = resolve_target(args.server, args.unix)
        prepare: Callable[[argparse.Namespace], list[bytes]] | None = getattr(args, "prepare", None)
        if prepare is not None:
            args.bodies = prepare(args)
        asyncio.run(_run(args, target))
    except CliError as error:
        _say(error.message)
        return error.exit_code
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`rxbeanstalk tubes | head -1`): no message, like other
        # Unix tools, and no second error when Python flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return EXIT_OK


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
