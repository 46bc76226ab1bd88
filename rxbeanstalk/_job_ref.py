"""``JobRef``: a job named by its server and its id, for jobs spread over several servers.

beanstalkd numbers jobs per server process, from 1, so on a cluster the id alone names a
job on every server at once (``delete 1`` would delete a different job on each). A
``JobRef`` carries the server's address with the id; ``Cluster.put`` emits one, and every
job command of a ``Cluster`` takes one (or a ``Job``, which knows its server).
"""

from __future__ import annotations

from typing import NamedTuple

from ._job import Job
from .errors import InvalidArgumentError


class JobRef(NamedTuple):
    """A job on one server of a cluster.

    Attributes:
        server: The server's address, as ``Cluster.addresses`` spells it
            (``"10.0.0.1:11300"``, or a unix socket path).
        id: The job's id on that server.
    """

    server: str
    id: int

    @classmethod
    def of(cls, job: Job) -> JobRef:
        """The reference of a ``Job`` (one reserved or peeked through a cluster).

        Args:
            job: The job.

        Returns:
            ``JobRef(address of the job's server, job.id)``.

        Raises:
            InvalidArgumentError: ``job`` is not a ``Job``.
        """
        if not isinstance(job, Job):
            raise InvalidArgumentError(f"JobRef.of takes a Job, not {type(job).__name__}")
        return cls(job._client.address, job.id)
