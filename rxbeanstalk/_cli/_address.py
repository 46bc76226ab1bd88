"""Where the server is: ``--server HOST:PORT``, ``--unix PATH`` or ``$BEANSTALKD_SERVER``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from ._failures import EXIT_USAGE, CliError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ENV_VAR", "Target", "parse_server", "resolve_target"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11300
ENV_VAR = "BEANSTALKD_SERVER"
"""Environment variable read when neither ``--server`` nor ``--unix`` is given."""

_UNIX_PREFIX = "unix:"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A server address, as a ``Client`` takes it.

    Attributes:
        host: Host name or IP address (ignored with ``unix_path``).
        port: TCP port (ignored with ``unix_path``).
        unix_path: Path of a unix socket, or ``None`` for TCP.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return self.unix_path
        # Brackets keep an IPv6 address apart from its port, as in a URL.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_server(text: str, what: str = "--server") -> Target:
    """Parse ``HOST:PORT``, ``HOST``, ``[IPV6]:PORT``, ``IPV6`` or ``unix:PATH``.

    Args:
        text: The address as the user wrote it.
        what: Where it came from, for the message (``--server`` or the variable name).

    Returns:
        The target; a missing host is ``127.0.0.1`` and a missing port 11300.

    Raises:
        CliError: The address is malformed (exit code 2).
    """
    if text.startswith(_UNIX_PREFIX):
        path = text[len(_UNIX_PREFIX) :]
        if not path:
            raise _bad(text, what, "the unix socket path is empty")
        return Target(unix_path=path)
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _bad(text, what, "'[' without ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad(text, what, "expected ':PORT' after ']'")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    # Two colons or more without brackets: a bare IPv6 address, default port.
    port = DEFAULT_PORT
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise _bad(text, what, "the port must be a number from 1 to 65535")
        port = int(port_text)
    return Target(host=host or DEFAULT_HOST, port=port)


def resolve_target(
    server: str | None, unix_path: str | None, environ: Mapping[str, str] | None = None
) -> Target:
    """Pick the server: ``--unix``, else ``--server``, else the environment, else the default.

    Args:
        server: The ``--server`` value, if given.
        unix_path: The ``--unix`` value, if given.
        environ: The environment (``os.environ`` when ``None``).

    Returns:
        The server to talk to.

    Raises:
        CliError: Both options were given, or an address is malformed (exit code 2).
    """
    if server is not None and unix_path is not None:
        raise CliError("--server and --unix exclude each other", EXIT_USAGE)
    if unix_path is not None:
        if not unix_path:
            raise CliError("--unix needs a socket path", EXIT_USAGE)
        return Target(unix_path=unix_path)
    if server is not None:
        return parse_server(server)
    from_env = (os.environ if environ is None else environ).get(ENV_VAR, "")
    if from_env:
        return parse_server(from_env, f"${ENV_VAR}")
    return Target()


def _bad(text: str, what: str, why: str) -> CliError:
    return CliError(f"bad {what} {text!r}: {why}", EXIT_USAGE)
