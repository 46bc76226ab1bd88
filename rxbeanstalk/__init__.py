"""rxbeanstalk: a reactive client for the beanstalkd work queue.

Every beanstalkd command is a cold ``reactivex.Observable``: ``await`` it in asyncio
code, ``subscribe`` to it in Jupyter or callback code, or ``.run()`` it in a plain script.
Commands are pipelined on one connection; reserves run on connections of their own.

    >>> from rxbeanstalk import Client
    >>> with Client("127.0.0.1", 11300) as client:  # doctest: +SKIP
    ...     job_id = client.put(b"hello").run()
"""

from ._client import Client
from ._cluster import Cluster, ClusterSummary
from ._job import Job
from ._job_ref import JobRef
from ._stats_stream import StatsSnapshot
from .errors import (
    BadFormatError,
    BeanstalkError,
    BuriedError,
    CommandError,
    CommandTimeoutError,
    ConnectError,
    ConnectionLostError,
    DeadlineSoonError,
    DrainingError,
    ExpectedCrlfError,
    InternalError,
    InvalidArgumentError,
    JobLostError,
    JobSettledError,
    JobTooBigError,
    LoopBindingError,
    NotFoundError,
    NotIgnoredError,
    OutOfMemoryError,
    ProtocolError,
    ServerError,
    TimedOutError,
    TransportError,
    UnknownCommandError,
)
from .protocol import (
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    JobState,
    JobStats,
    Reply,
    ServerStats,
    TubeStats,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_TTR",
    "DEFAULT_TUBE",
    "BadFormatError",
    "BeanstalkError",
    "BuriedError",
    "Client",
    "Cluster",
    "ClusterSummary",
    "CommandError",
    "CommandTimeoutError",
    "ConnectError",
    "ConnectionLostError",
    "DeadlineSoonError",
    "DrainingError",
    "ExpectedCrlfError",
    "InternalError",
    "InvalidArgumentError",
    "Job",
    "JobLostError",
    "JobRef",
    "JobSettledError",
    "JobState",
    "JobStats",
    "JobTooBigError",
    "LoopBindingError",
    "NotFoundError",
    "NotIgnoredError",
    "OutOfMemoryError",
    "ProtocolError",
    "Reply",
    "ServerError",
    "ServerStats",
    "StatsSnapshot",
    "TimedOutError",
    "TransportError",
    "TubeStats",
    "UnknownCommandError",
]
