"""``python -m soak``: run one soak, print the summary, save the JSON.

Exit status: 0 when every invariant held, 1 when one failed, 2 on bad arguments or a
missing beanstalkd.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from rxbeanstalk.testing import BeanstalkdNotFoundError

from .chaos import MIXED
from .report import details, table, write_json
from .run import SoakConfig, soak

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> tuple[SoakConfig, Path]:
    """The run's config and where its JSON goes."""
    default = SoakConfig()
    parser = argparse.ArgumentParser(
        prog="python -m soak",
        description="Soak rxbeanstalk under chaos against a private beanstalkd.",
    )
    parser.add_argument("--jobs", type=int, default=default.jobs, help="seqs to put")
    parser.add_argument(
        "--chaos",
        default=default.chaos,
        help=f"none, drop, mixed, or a comma-separated list of {', '.join(MIXED)} "
        f"(default: {default.chaos})",
    )
    parser.add_argument(
        "--binlog",
        action="store_true",
        help="beanstalkd -b DIR, with kill -9 + restart (--restarts) besides the chaos",
    )
    parser.add_argument("--restarts", type=int, default=default.restarts)
    parser.add_argument("--producers", type=int, default=default.producers)
    parser.add_argument(
        "--consumers", type=int, default=default.consumers, help="the stream's max_in_flight"
    )
    parser.add_argument(
        "--put-window", type=int, default=default.put_window, help="puts in flight per producer"
    )
    parser.add_argument(
        "--put-rate", type=float, default=None, help="puts per second in all (default: no limit)"
    )
    parser.add_argument(
        "--period",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=default.period,
        help="seconds between faults, uniform in [LOW, HIGH] (default: 2 3)",
    )
    parser.add_argument(
        "--payload",
        type=int,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=default.payload,
        help="random payload bytes per job (default: 16 512)",
    )
    parser.add_argument("--command-timeout", type=float, default=default.command_timeout)
    parser.add_argument("--drain-timeout", type=float, default=default.drain_timeout)
    parser.add_argument("--timeout", type=float, default=default.timeout, help="whole-run bound")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="default: soak/results/NAME.json")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    try:
        config = SoakConfig(
            jobs=args.jobs,
            chaos=args.chaos,
            binlog=args.binlog,
            restarts=args.restarts,
            producers=args.producers,
            consumers=args.consumers,
            put_window=args.put_window,
            put_rate=args.put_rate,
            period=tuple(args.period),
            payload=tuple(args.payload),
            command_timeout=args.command_timeout,
            drain_timeout=args.drain_timeout,
            timeout=args.timeout,
            seed=args.seed,
            progress=not args.quiet,
        )
    except ValueError as error:
        parser.error(str(error))
    return config, args.json or RESULTS / f"{config.name}.json"


def main(argv: list[str] | None = None) -> int:
    """Run, print, save; the exit status."""
    config, path = parse_args(argv)
    print(f"soak: {config.name}: starting", file=sys.stderr, flush=True)
    try:
        result = asyncio.run(soak(config))
    except BeanstalkdNotFoundError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2
    write_json(result, path)
    print(table([result]))
    print()
    print(details(result))
    print(f"\nsoak: {'PASSED' if result.passed else 'FAILED'}; JSON in {path}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
