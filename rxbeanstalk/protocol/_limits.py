"""Numbers fixed by the beanstalkd protocol (1.12/1.13) and the client's defaults."""

from __future__ import annotations

DEFAULT_PRIORITY = 2**31
"""The priority a job gets when none is given: the middle of the range."""

DEFAULT_TTR = 60
"""Seconds a reserved job may stay unsettled before the server takes it back."""

DEFAULT_TUBE = "default"
"""The tube every connection uses and watches when it opens."""

MAX_U32 = 2**32 - 1
"""Largest priority, delay, TTR, kick bound or pause: the server reads them as u32."""

MAX_RESERVE_TIMEOUT = 2**31 - 1
"""Largest reserve timeout: beanstalkd 1.12 blocks forever on anything larger."""

MAX_JOB_ID = 2**64 - 1
"""Job ids are u64 on the server."""

MAX_TUBE_NAME = 200
"""Longest tube name in bytes."""

MAX_LINE = 224
"""Longest command line the server reads, CRLF included; also the client's reply cap."""

DEFAULT_MAX_JOB_SIZE = 65535
"""The server's default ``max-job-size`` (``-z``)."""

MAX_BODY = 1 << 30
"""Largest body the server can be configured to accept (``-z`` is clamped to 1 GiB)."""
