"""Test helpers: run a real beanstalkd, and pytest fixtures for it.

:class:`BeanstalkdServer` starts the system's ``beanstalkd`` binary on 127.0.0.1 with a free
port (or on a unix socket), polls until it answers, and stops it cleanly. Its raw helpers
(``query``, ``stats``, ``stats_job``) use plain sockets only, giving tests a view of the server
that does not depend on the client under test.

:class:`FaultProxy` sits between a client and the server on loopback and injects network
faults (drops, half-open connections, stalls, slow links, cut bodies, garbage, refused or
held connects), recording every byte each way, so a test can see what crossed the wire.

The pytest fixtures ``beanstalkd``, ``beanstalkd_unix``, ``beanstalkd_module`` and
``beanstalkd_factory`` live in :mod:`rxbeanstalk.testing.pytest_plugin`, which pytest loads
automatically (``pytest11`` entry point) once rxbeanstalk is installed.
"""

from rxbeanstalk.testing._proxy import FaultProxy, Link
from rxbeanstalk.testing._server import BeanstalkdNotFoundError, BeanstalkdServer

__all__ = ["BeanstalkdNotFoundError", "BeanstalkdServer", "FaultProxy", "Link"]
