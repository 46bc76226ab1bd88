"""The command-line tool: ``python -m rxbeanstalk`` (installed as ``rxbeanstalk``).

One concept per module: ``_main`` (parser, event loop, exit codes), ``_address``
(``--server``/``--unix``/``$BEANSTALKD_SERVER``), ``_failures`` (exit codes and error
messages), ``_context`` (what a command gets), ``_commands`` (the handlers), ``_format``
(tables and JSON), ``_top`` and ``_terminal`` (the live view), ``_drain`` and
``_progress`` (draining a tube). See docs/cli.md for the user's side.
"""

from ._main import main

__all__ = ["main"]
