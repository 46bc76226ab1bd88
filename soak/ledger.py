"""The seq ledger: what was put, what was acknowledged, what was delivered, and when.

Producers record each put attempt and how it ended; the consumer records each delivery
(checked against the body's sha256) and each ``process`` outcome. At the end
:meth:`Ledger.duplicates` sorts every delivery after a seq's first into:

- a **put-retry duplicate**: a second *job* of the seq (another put attempt), which is
  explained when every attempt delivered was acknowledged or had an unknown outcome;
- a **redelivery**: the same job again, which is explained when its previous delivery
  was not acknowledged as deleted and a fault window lies between the two deliveries
  (the connection dropped with the job in flight, and the server put it back);
- **unexplained**: anything else, such as a job delivered again with no fault in
  between, or after its delete was acknowledged.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rxbeanstalk import Job
from rxbeanstalk.errors import ConnectError, ConnectionLostError, ProtocolError
from rxbeanstalk.operators import Action, Outcome

from .body import BodyError, Stamp, read_body

__all__ = ["Delivery", "Duplicates", "Ledger", "PutState", "Window", "error_name"]

# A delivery still waiting for its outcome after this long is forgotten by in_flight()
# (a safety net: pipeline_failed() forgets the deliveries of a pipeline that failed).
_STALE = 10.0
# How many examples of each kind of problem the report keeps.
_SAMPLES = 20


def error_name(error: BaseException) -> str:
    """``ConnectionLostError``, or ``ConnectionLostError<-ProtocolError`` when it has a cause."""
    name = type(error).__name__
    cause = error.__cause__
    return name if cause is None else f"{name}<-{type(cause).__name__}"


class PutState(enum.Enum):
    """How one put attempt ended."""

    PENDING = "pending"
    """Sent; no answer yet."""
    ACKED = "acked"
    """Answered ``INSERTED``: the job exists."""
    AMBIGUOUS = "ambiguous"
    """The connection was lost (or garbled) before the answer: the job may exist."""
    UNSENT = "unsent"
    """Could not connect: the put never reached a server."""
    REFUSED = "refused"
    """The server answered with an error word: no job."""


@dataclass(slots=True)
class Delivery:
    """One job handed to the handler."""

    key: Stamp
    job_id: int
    at: float
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """A span during which a fault may have made the server put jobs back."""

    index: int
    start: float
    end: float


@dataclass
class Duplicates:
    """Deliveries beyond each seq's first, sorted by cause."""

    total: int = 0
    redelivery: int = 0
    put_retry: int = 0
    unexplained: int = 0
    by_fault: Counter[int] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "total": self.total,
            "redelivery": self.redelivery,
            "put_retry": self.put_retry,
            "unexplained": self.unexplained,
            "redeliveries_by_fault": {str(k): v for k, v in sorted(self.by_fault.items())},
            "unexplained_samples": self.samples,
        }


class Ledger:
    """Seq accounting for one soak run.

    Args:
        jobs: How many seqs the producers put (0 .. jobs-1).
        run_id: The run's id, as written in every body.
        clock: Seconds since the run started.
    """

    def __init__(self, jobs: int, run_id: str, clock: Callable[[], float]) -> None:
        self.jobs = jobs
        self.run_id = run_id
        self.clock = clock
        self.attempts: dict[Stamp, PutState] = {}
        self.acked: dict[int, Stamp] = {}
        self.gave_up: set[int] = set()
        self.deliveries: dict[int, list[Delivery]] = {}
        self.corrupt = 0
        self.corrupt_samples: list[str] = []
        self.put_errors: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self._live: dict[Job, Delivery] = {}
        self._bad_jobs: set[Job] = set()
        self._waiting: set[int] = set()  # acked seqs not delivered yet

    # -- producers --------------------------------------------------------------------

    def put_sent(self, seq: int, attempt: int) -> Stamp:
        """A put attempt is about to be sent."""
        key = Stamp(seq, attempt)
        self.attempts[key] = PutState.PENDING
        return key

    def put_acked(self, key: Stamp, job_id: int) -> None:
        """The put was answered ``INSERTED``."""
        self.attempts[key] = PutState.ACKED
        self.acked[key.seq] = key
        if key.seq not in self.deliveries:
            self._waiting.add(key.seq)

    def put_failed(self, key: Stamp, error: BaseException) -> PutState:
        """The put failed with ``error``; returns whether its outcome is unknown."""
        if isinstance(error, ConnectError):
            state = PutState.UNSENT
        elif isinstance(error, ConnectionLostError | ProtocolError):
            state = PutState.AMBIGUOUS
        else:
            state = PutState.REFUSED
        self.attempts[key] = state
        self.put_errors[error_name(error)] += 1
        return state

    def put_gave_up(self, seq: int) -> None:
        """The producer stopped retrying ``seq`` (never acknowledged)."""
        self.gave_up.add(seq)

    # -- consumer ---------------------------------------------------------------------

    def receive(self, job: Job) -> Delivery | None:
        """A job reached the pipeline: check its body and record the delivery.

        Returns:
            The delivery, or ``None`` for a corrupt body (see :meth:`is_corrupt`).
        """
        try:
            key = read_body(job.body, self.run_id)
        except BodyError as error:
            self.corrupt += 1
            self._bad_jobs.add(job)
            if len(self.corrupt_samples) < _SAMPLES:
                self.corrupt_samples.append(f"job {job.id} at {self.clock():.3f} s: {error}")
            return None
        delivery = Delivery(key, job.id, self.clock())
        self.deliveries.setdefault(key.seq, []).append(delivery)
        self._waiting.discard(key.seq)
        self._live[job] = delivery
        return delivery

    def is_corrupt(self, job: Job) -> bool:
        """Whether ``receive`` found the job's body corrupt (asked once, by the handler)."""
        if job in self._bad_jobs:
            self._bad_jobs.discard(job)
            return True
        return False

    def outcome(self, outcome: Outcome) -> None:
        """``process`` settled a job."""
        self.outcomes[outcome.action.value] += 1
        delivery = self._live.pop(outcome.job, None)
        if delivery is not None:
            delivery.outcome = outcome.action.value

    def pipeline_failed(self) -> None:
        """The consumer's pipeline failed: its lanes closed, no outcome will follow."""
        self._live.clear()

    def in_flight(self) -> list[int]:
        """The seqs delivered whose outcome has not arrived (forgetting stale ones)."""
        now = self.clock()
        stale = [job for job, d in self._live.items() if now - d.at > _STALE]
        for job in stale:
            del self._live[job]
        return sorted(d.key.seq for d in self._live.values())

    # -- progress ---------------------------------------------------------------------

    @property
    def settled_puts(self) -> int:
        """Seqs the producers are done with (acknowledged or given up)."""
        return len(self.acked) + len(self.gave_up)

    @property
    def all_acked_delivered(self) -> bool:
        """Whether every seq put so far and acknowledged was delivered at least once."""
        return not self._waiting

    # -- reconciliation ---------------------------------------------------------------

    def lost(self) -> list[int]:
        """Acknowledged seqs never delivered with a valid body."""
        return sorted(seq for seq in self.acked if seq not in self.deliveries)

    def count(self, state: PutState) -> int:
        """Put attempts that ended in ``state``."""
        return sum(1 for s in self.attempts.values() if s is state)

    def landed_keys(self) -> set[Stamp]:
        """Every job (seq, attempt) that was delivered at least once."""
        return {d.key for ds in self.deliveries.values() for d in ds}

    def phantoms(self) -> list[str]:
        """Delivered jobs whose put was neither acknowledged nor of unknown outcome."""
        found = []
        for key in sorted(self.landed_keys()):
            state = self.attempts.get(key)
            if state not in (PutState.ACKED, PutState.AMBIGUOUS):
                found.append(f"seq {key.seq} attempt {key.attempt}: put {state and state.value}")
        return found

    def duplicates(self, windows: Iterable[Window]) -> Duplicates:
        """Sort every delivery after each seq's first by cause (see the module doc)."""
        spans = sorted(windows, key=lambda w: w.start)
        result = Duplicates()
        for seq, deliveries in self.deliveries.items():
            if len(deliveries) < 2:
                continue
            ordered = sorted(deliveries, key=lambda d: d.at)
            last: dict[Stamp, Delivery] = {ordered[0].key: ordered[0]}
            for delivery in ordered[1:]:
                result.total += 1
                previous = last.get(delivery.key)
                last[delivery.key] = delivery
                if previous is None:
                    states = {self.attempts.get(key) for key in last}
                    if states <= {PutState.ACKED, PutState.AMBIGUOUS}:
                        result.put_retry += 1
                    else:
                        self._unexplained(
                            result,
                            f"seq {seq}: a second job (attempt {delivery.key.attempt}) at "
                            f"{delivery.at:.3f} s, but the puts were "
                            f"{sorted(str(s and s.value) for s in states)}",
                        )
                    continue
                if previous.outcome == Action.DELETED.value:
                    self._unexplained(
                        result,
                        f"seq {seq} (job {delivery.job_id}) delivered at {delivery.at:.3f} s "
                        f"after its delete was acknowledged (delivered at {previous.at:.3f} s)",
                    )
                    continue
                fault = next(
                    (w for w in spans if w.start <= delivery.at and previous.at <= w.end), None
                )
                if fault is None:
                    self._unexplained(
                        result,
                        f"seq {seq} (job {delivery.job_id}) delivered at {previous.at:.3f} s "
                        f"(outcome {previous.outcome}) and again at {delivery.at:.3f} s with no "
                        "fault in between",
                    )
                else:
                    result.redelivery += 1
                    result.by_fault[fault.index] += 1
        return result

    @staticmethod
    def _unexplained(result: Duplicates, what: str) -> None:
        result.unexplained += 1
        if len(result.samples) < _SAMPLES:
            result.samples.append(what)
