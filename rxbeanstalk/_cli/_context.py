"""What every command gets: its arguments, a client, the server's address, an output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from .._client import Client

__all__ = ["Context", "Output"]


class Output:
    """Where results go: stdout, as lines of text or as one JSON document.

    The streams are looked up on each call, so that a test's captured ``sys.stdout``
    is the one written to.

    Args:
        as_json: Whether ``--json`` was given.
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    @property
    def stdout(self) -> TextIO:
        """The current ``sys.stdout``."""
        return sys.stdout

    @property
    def stderr(self) -> TextIO:
        """The current ``sys.stderr``."""
        return sys.stderr

    def json(self, value: Any) -> None:
        """Write ``value`` as one indented JSON document.

        Args:
            value: Anything ``json.dumps`` takes.
        """
        self.stdout.write(json.dumps(value, indent=2) + "\n")
        self.stdout.flush()

    def lines(self, lines: Iterable[str]) -> None:
        """Write each string as a line.

        Args:
            lines: The text, without newlines.
        """
        stdout = self.stdout
        for line in lines:
            stdout.write(line + "\n")
        stdout.flush()


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """Everything a command's handler needs.

    Attributes:
        args: The parsed command line.
        client: A client connected (lazily) to the chosen server.
        address: The server's address, for messages.
        out: Where results go.
    """

    args: argparse.Namespace
    client: Client
    address: str
    out: Output
