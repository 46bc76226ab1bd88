"""The soak runner: rxbeanstalk under chaos, reconciled from the server's own counters.

``python -m soak --jobs 100000 --chaos drop`` (or ``mixed``, or ``--binlog``) starts a
private beanstalkd, puts ``--jobs`` jobs through a ``FaultProxy`` from a few producer
clients while a ``reserve_stream(...).pipe(process(...), retry_with_backoff(...))``
consumer drains them, injects a fault every few seconds, and then checks that nothing
acknowledged was lost, nothing was corrupted and every duplicate delivery has a cause.
See ``soak/README.md`` and ``docs/reliability.md``.

Modules: :mod:`soak.body` (self-checking job bodies), :mod:`soak.ledger` (seq
accounting), :mod:`soak.chaos` (the fault schedule), :mod:`soak.anchor` (the raw
connection that is the source of truth), :mod:`soak.producer`, :mod:`soak.consumer`,
:mod:`soak.run` (one run), :mod:`soak.reconcile` (the invariants) and
:mod:`soak.report` (table and JSON).
"""

from .chaos import DROP, MIXED, Fault, FaultTiming
from .reconcile import Check, SoakResult
from .run import SoakConfig, soak

__all__ = ["DROP", "MIXED", "Check", "Fault", "FaultTiming", "SoakConfig", "SoakResult", "soak"]
