"""The YAML bodies of ``stats``, ``stats-tube``, ``stats-job`` and ``list-tubes*``, typed.

beanstalkd prints these bodies with ``printf`` and quotes them differently by version
(protocol.md 1.6): 1.12 leaves ``hostname``, ``os``, ``platform``, ``name`` and ``tube``
bare, and ``os`` may read ``#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)``, which a
YAML loader takes for a comment (or, with a ``": "`` in it, for a nested mapping); a tube
named ``123``, ``true`` or ``0.5`` becomes a number or a bool under ``safe_load``; 1.13
puts ``"..."`` around the free-text values but escapes nothing inside them.

So a body is read line by line (``key: value``, split at the first ``": "``; ``- item``
for lists), which cannot lose a ``#`` or a ``": "`` in a value, and every value stays a
``str`` until the declared type of its dataclass field converts it:

* free-text keys (``hostname``, ``os``, ``platform``, ``name``, ``tube``) and list items
  are taken verbatim, less one pair of surrounding double quotes: the server writes them
  as ``"%s"`` (1.13+) or ``%s`` (1.12) and never escapes, so the text between the quotes
  is exactly the original, backslashes included;
* any other quoted value (``version: "1.12"``, or a key of a newer server) is decoded by
  PyYAML's ``BaseLoader``, which returns strings only (never ``safe_load``); the result
  is cached, since such values (the version) repeat on every call;
* any other bare value is taken verbatim: for every token beanstalkd prints bare
  (integers, ``0.004848``, ``true``, the hex instance id) that is what ``BaseLoader`` would
  return, and unlike YAML it keeps a ``#`` that an unquoting server wrote.

A parse of ``stats`` is one pass over 51 lines plus one table look-up and one conversion
per key; the field-to-converter tables are computed once per class at import.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import yaml

from ..errors import ProtocolError
from . import _html

__all__ = [
    "JobState",
    "JobStats",
    "ServerStats",
    "TubeStats",
    "parse_job_stats",
    "parse_server_stats",
    "parse_tube_stats",
    "parse_yaml_dict",
    "parse_yaml_list",
]


class JobState(enum.Enum):
    """The state of a job, as ``stats-job`` reports it."""

    READY = "ready"
    DELAYED = "delayed"
    RESERVED = "reserved"
    BURIED = "buried"


# Every dataclass below maps wire key ``a-b`` to field ``a_b`` (no wire key has a ``_``).
# Fields without a default are required: a reply without them raises ProtocolError. The
# others default to a neutral value (0, "", False) so that an older server's reply, which
# lacks keys added later (1.12 added ``os``, ``platform`` and ``draining``), still parses.


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ServerStats:
    """The reply to ``stats``: the whole server.

    Every key of the protocol document is a field: the wire key with ``-`` replaced by
    ``_``. ``pid`` and ``version`` are required; any other key an older server does not
    send gets a neutral default (``0``, ``""`` or ``False``).

    Attributes:
        current_jobs_urgent: Ready jobs with priority < 1024.
        current_jobs_ready: Jobs in the ready queues.
        current_jobs_reserved: Jobs reserved by all clients.
        current_jobs_delayed: Delayed jobs.
        current_jobs_buried: Buried jobs.
        cmd_put: Cumulative number of ``put`` commands; every ``cmd_*`` field likewise
            counts its command since the server started.
        job_timeouts: Cumulative number of times a job's TTR ran out.
        total_jobs: Cumulative number of jobs created.
        max_job_size: Largest job body accepted, in bytes.
        current_tubes: Tubes that exist now.
        current_connections: Open connections.
        current_producers: Open connections that have sent a ``put``.
        current_workers: Open connections that have sent a ``reserve``.
        current_waiting: Open connections waiting in a ``reserve``.
        total_connections: Cumulative number of connections.
        pid: The server's process id.
        version: The server's version, for example ``"1.12"``.
        rusage_utime: User CPU time of the server, in seconds.
        rusage_stime: System CPU time of the server, in seconds.
        uptime: Seconds since the server started.
        binlog_oldest_index: Index of the oldest binlog file needed (0 without ``-b``).
        binlog_current_index: Index of the binlog file being written (0 without ``-b``).
        binlog_records_migrated: Cumulative number of records moved to a newer binlog.
        binlog_records_written: Cumulative number of records written to the binlog.
        binlog_max_size: Largest size of a binlog file, in bytes.
        draining: Whether the server is in drain mode (refuses ``put``; since 1.12).
        id: Random id of this server process, 16 hex characters; it changes on restart.
        hostname: The server's host name.
        os: The kernel version string (``uname -v``; since 1.12).
        platform: The machine type (``uname -m``; since 1.12).
        extra: Keys a newer server sends that this class does not know, verbatim strings.
    """

    current_jobs_urgent: int = 0
    current_jobs_ready: int = 0
    current_jobs_reserved: int = 0
    current_jobs_delayed: int = 0
    current_jobs_buried: int = 0
    cmd_put: int = 0
    cmd_peek: int = 0
    cmd_peek_ready: int = 0
    cmd_peek_delayed: int = 0
    cmd_peek_buried: int = 0
    cmd_reserve: int = 0
    cmd_reserve_with_timeout: int = 0
    cmd_delete: int = 0
    cmd_release: int = 0
    cmd_use: int = 0
    cmd_watch: int = 0
    cmd_ignore: int = 0
    cmd_bury: int = 0
    cmd_kick: int = 0
    cmd_touch: int = 0
    cmd_stats: int = 0
    cmd_stats_job: int = 0
    cmd_stats_tube: int = 0
    cmd_list_tubes: int = 0
    cmd_list_tube_used: int = 0
    cmd_list_tubes_watched: int = 0
    cmd_pause_tube: int = 0
    job_timeouts: int = 0
    total_jobs: int = 0
    max_job_size: int = 0
    current_tubes: int = 0
    current_connections: int = 0
    current_producers: int = 0
    current_workers: int = 0
    current_waiting: int = 0
    total_connections: int = 0
    pid: int
    version: str
    rusage_utime: float = 0.0
    rusage_stime: float = 0.0
    uptime: int = 0
    binlog_oldest_index: int = 0
    binlog_current_index: int = 0
    binlog_records_migrated: int = 0
    binlog_records_written: int = 0
    binlog_max_size: int = 0
    draining: bool = False
    id: str = ""
    hostname: str = ""
    os: str = ""
    platform: str = ""
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        # The generated repr would list all 52 fields; this names the server and gives
        # the numbers one looks at first (every field is still an attribute).
        draining = " draining" if self.draining else ""
        return (
            f"<ServerStats beanstalkd {self.version} pid={self.pid} uptime={self.uptime}s"
            f"{draining}: ready={self.current_jobs_ready}"
            f" reserved={self.current_jobs_reserved} delayed={self.current_jobs_delayed}"
            f" buried={self.current_jobs_buried} urgent={self.current_jobs_urgent}"
            f" total_jobs={self.total_jobs} tubes={self.current_tubes}"
            f" connections={self.current_connections}>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the job counts in one row, every field folded below."""
        where = f" on {self.hostname}" if self.hostname else ""
        note = f"pid {self.pid} · up {self.uptime} s"
        if self.id:
            note += f" · id {self.id}"
        if self.draining:
            note += " · draining (refuses put)"
        return _html.compact(
            f"beanstalkd {self.version}{where}",
            [
                ("ready", self.current_jobs_ready),
                ("reserved", self.current_jobs_reserved),
                ("delayed", self.current_jobs_delayed),
                ("buried", self.current_jobs_buried),
                ("urgent", self.current_jobs_urgent),
                ("total jobs", self.total_jobs),
                ("tubes", self.current_tubes),
                ("connections", self.current_connections),
                ("producers", self.current_producers),
                ("workers", self.current_workers),
                ("waiting", self.current_waiting),
            ],
            _html.field_items(self),
            note=note,
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class TubeStats:
    """The reply to ``stats-tube``: one tube.

    ``name`` is required and is always a ``str`` (a tube named ``123`` stays ``"123"``);
    any other key an older server does not send defaults to ``0``.

    Attributes:
        name: The tube's name.
        current_jobs_urgent: Ready jobs with priority < 1024 in this tube.
        current_jobs_ready: Ready jobs in this tube.
        current_jobs_reserved: Jobs of this tube reserved by all clients.
        current_jobs_delayed: Delayed jobs in this tube.
        current_jobs_buried: Buried jobs in this tube.
        total_jobs: Cumulative number of jobs created in this tube.
        current_using: Open connections using this tube.
        current_watching: Open connections watching this tube.
        current_waiting: Open connections watching this tube and waiting in a reserve.
        cmd_delete: Cumulative number of ``delete`` commands on jobs of this tube.
        cmd_pause_tube: Cumulative number of ``pause-tube`` commands on this tube.
        pause: Length of the current or last pause, in seconds.
        pause_time_left: Seconds until the pause ends (signed; 0 when not paused).
        extra: Keys a newer server sends that this class does not know, verbatim strings.
    """

    name: str
    current_jobs_urgent: int = 0
    current_jobs_ready: int = 0
    current_jobs_reserved: int = 0
    current_jobs_delayed: int = 0
    current_jobs_buried: int = 0
    total_jobs: int = 0
    current_using: int = 0
    current_watching: int = 0
    current_waiting: int = 0
    cmd_delete: int = 0
    cmd_pause_tube: int = 0
    pause: int = 0
    pause_time_left: int = 0
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        paused = f" paused={self.pause_time_left}s" if self.pause_time_left > 0 else ""
        return (
            f"<TubeStats {self.name!r}: ready={self.current_jobs_ready}"
            f" reserved={self.current_jobs_reserved} delayed={self.current_jobs_delayed}"
            f" buried={self.current_jobs_buried} urgent={self.current_jobs_urgent}"
            f" total_jobs={self.total_jobs} deleted={self.cmd_delete}"
            f" watching={self.current_watching} waiting={self.current_waiting}{paused}>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the tube's counts in one row, every field folded below."""
        note = ""
        if self.pause_time_left > 0:
            note = f"paused for {self.pause} s, {self.pause_time_left} s left"
        return _html.compact(
            f"tube {self.name!r}",
            [
                ("ready", self.current_jobs_ready),
                ("reserved", self.current_jobs_reserved),
                ("delayed", self.current_jobs_delayed),
                ("buried", self.current_jobs_buried),
                ("urgent", self.current_jobs_urgent),
                ("total jobs", self.total_jobs),
                ("deleted", self.cmd_delete),
                ("using", self.current_using),
                ("watching", self.current_watching),
                ("waiting", self.current_waiting),
            ],
            _html.field_items(self),
            note=note,
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class JobStats:
    """The reply to ``stats-job``: one job.

    ``id``, ``tube`` and ``state`` are required; any other key an older server does not
    send defaults to ``0``.

    Attributes:
        id: The job id.
        tube: The tube the job is in (always a ``str``).
        state: Where the job is in its life cycle.
        pri: The job's priority (0 is the most urgent).
        age: Seconds since the job was created.
        delay: The delay the job was put or released with, in seconds.
        ttr: Time to run, in seconds.
        time_left: Seconds until a reserved job's TTR runs out or a delayed job becomes
            ready (signed; 0 in other states).
        file: The binlog file holding the job (0 without ``-b``).
        reserves: Times the job was reserved.
        timeouts: Times the job's TTR ran out while it was reserved.
        releases: Times the job was released.
        buries: Times the job was buried.
        kicks: Times the job was kicked.
        extra: Keys a newer server sends that this class does not know, verbatim strings.
    """

    id: int
    tube: str
    state: JobState
    pri: int = 0
    age: int = 0
    delay: int = 0
    ttr: int = 0
    time_left: int = 0
    file: int = 0
    reserves: int = 0
    timeouts: int = 0
    releases: int = 0
    buries: int = 0
    kicks: int = 0
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        return (
            f"<JobStats {self.id} in {self.tube!r}: {self.state.value} pri={self.pri}"
            f" age={self.age}s delay={self.delay}s ttr={self.ttr}s"
            f" time_left={self.time_left}s reserves={self.reserves}"
            f" timeouts={self.timeouts} releases={self.releases} buries={self.buries}"
            f" kicks={self.kicks}>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the job's numbers in one row, every field folded below."""
        return _html.compact(
            f"job {self.id} in tube {self.tube!r}: {self.state.value}",
            [
                ("pri", self.pri),
                ("age (s)", self.age),
                ("delay (s)", self.delay),
                ("ttr (s)", self.ttr),
                ("time left (s)", self.time_left),
                ("reserves", self.reserves),
                ("timeouts", self.timeouts),
                ("releases", self.releases),
                ("buries", self.buries),
                ("kicks", self.kicks),
            ],
            _html.field_items(self),
        )


# ------------------------------------------------------------------ body -> dict[str, str]

# Values that beanstalkd prints with %s (bare in 1.12, "%s" from 1.13): never unescaped.
_FREE_TEXT: Final = frozenset({"hostname", "os", "platform", "name", "tube"})
_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _unquote(text: str) -> str:
    """Drop one pair of surrounding double quotes, keeping everything between them."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


@functools.lru_cache(maxsize=128)
def _quoted_scalar(text: str) -> str:
    """Decode a quoted YAML scalar with ``BaseLoader`` (strings only, no type guessing)."""
    try:
        value = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        value = None
    # Not one string scalar (say a server that quotes but does not escape wrote a
    # backslash): fall back to the server's own "%s" convention.
    return value if isinstance(value, str) else _unquote(text)


def _lines(body: bytes) -> list[str]:
    """Split a body into its non-blank lines, without the ``---`` document start."""
    # Undecodable bytes (a host name in Latin-1, say) must not make stats unreadable.
    text = body.decode("utf-8", "replace")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[0] == "---":
        del lines[0]
    return [line for line in lines if line]


def parse_yaml_dict(body: bytes) -> dict[str, str]:
    """Parse the ``---`` / ``key: value`` body of a ``stats*`` reply into strings.

    Nothing is retyped: ``name: 123`` gives ``{"name": "123"}``. Free-text values
    (``hostname``, ``os``, ``platform``, ``name``, ``tube``) are kept verbatim less one
    pair of surrounding double quotes, whatever ``#`` or ``": "`` they hold; other
    quoted values are decoded by PyYAML's ``BaseLoader``; other bare values are verbatim.

    Args:
        body: The YAML chunk of an ``OK`` reply, without the chunk's trailing CRLF
            (CRLF line ends are tolerated).

    Returns:
        Every key of the body, in order, to its value as a string.

    Raises:
        ProtocolError: A line is not ``key: value``, or a key appears twice.
    """
    result: dict[str, str] = {}
    for line in _lines(body):
        key, sep, value = line.partition(": ")
        if not sep and line.endswith(":"):  # an empty value may lose its space
            key, sep, value = line[:-1], ":", ""
        if not sep or (key not in _KNOWN_KEYS and _KEY.fullmatch(key) is None):
            raise ProtocolError(f"YAML mapping line {line!r} is not 'key: value'")
        if key in result:
            raise ProtocolError(f"YAML mapping has the key {key!r} twice")
        if key in _FREE_TEXT:
            result[key] = _unquote(value)
        elif value[:1] in ('"', "'"):
            result[key] = _quoted_scalar(value)
        else:
            result[key] = value
    return result


def parse_yaml_list(body: bytes) -> list[str]:
    """Parse the ``---`` / ``- item`` body of a ``list-tubes*`` reply into strings.

    Items are verbatim (``- 123`` gives ``"123"``, ``- null`` gives ``"null"``); one pair
    of surrounding double quotes, which no tube name can contain, is dropped.

    Args:
        body: The YAML chunk of an ``OK`` reply; a ``---`` line alone is the empty list.

    Returns:
        The items in order.

    Raises:
        ProtocolError: A line is not ``- item``.
    """
    items: list[str] = []
    for line in _lines(body):
        if line.startswith("- "):
            items.append(_unquote(line[2:]))
        elif line == "-":
            items.append("")
        else:
            raise ProtocolError(f"YAML list line {line!r} is not '- item'")
    return items


# ------------------------------------------------------------ dict[str, str] -> dataclass

_FLOAT: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_BOOLS: Final = {"true": True, "false": False}


def _to_int(text: str) -> int:
    digits = text[1:] if text[:1] == "-" else text
    if not (digits.isascii() and digits.isdigit()):  # int() also takes "+1", " 1", "1_0"
        raise ValueError(text)
    return int(text)


def _to_float(text: str) -> float:
    if _FLOAT.fullmatch(text) is None:  # float() would take "nan", "inf", "1e3", ...
        raise ValueError(text)
    return float(text)


def _to_bool(text: str) -> bool:
    return _BOOLS[text]  # KeyError is a LookupError; see _Schema.build


_Converter = Callable[[str], object]

# declared field type -> (converter, what the value should have been, for messages)
_CONVERTERS: Final[dict[object, tuple[_Converter, str]]] = {
    int: (_to_int, "an integer"),
    float: (_to_float, "a decimal number"),
    bool: (_to_bool, "true or false"),
    str: (str, "a string"),
}

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class _Schema:
    """How to build one stats dataclass from its string mapping."""

    command: str
    fields: dict[str, tuple[str, _Converter, str]]  # wire key -> (field, converter, what)
    required: frozenset[str]  # wire keys

    @classmethod
    def of(cls, target: type[Any], command: str) -> _Schema:
        """Derive the table from the dataclass fields' declared types, once per class."""
        hints = typing.get_type_hints(target)
        fields: dict[str, tuple[str, _Converter, str]] = {}
        required: set[str] = set()
        for field in dataclasses.fields(target):
            if field.name == "extra":
                continue
            kind = hints[field.name]
            convert: _Converter
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                choices = ", ".join(str(member.value) for member in kind)
                convert, what = kind, f"one of {choices}"
            else:
                convert, what = _CONVERTERS[kind]
            key = field.name.replace("_", "-")
            fields[key] = (field.name, convert, what)
            if field.default is dataclasses.MISSING:
                required.add(key)
        return cls(command, fields, frozenset(required))

    def build(self, factory: Callable[..., _T], body: bytes) -> _T:
        """Parse ``body`` and build the dataclass; unknown keys go to ``extra``."""
        raw = parse_yaml_dict(body)
        values: dict[str, object] = {}
        extra: dict[str, str] = {}
        for key, text in raw.items():
            spec = self.fields.get(key)
            if spec is None:
                extra[key] = text
                continue
            name, convert, what = spec
            try:
                values[name] = convert(text)
            except (ValueError, LookupError):
                raise ProtocolError(
                    f"{self.command} reply: {key!r} is {text!r}, expected {what}"
                ) from None
        missing = self.required.difference(raw)
        if missing:
            raise ProtocolError(f"{self.command} reply lacks the keys {sorted(missing)}")
        return factory(**values, extra=extra)


_SERVER: Final = _Schema.of(ServerStats, "stats")
_TUBE: Final = _Schema.of(TubeStats, "stats-tube")
_JOB: Final = _Schema.of(JobStats, "stats-job")
_KNOWN_KEYS: Final = frozenset({*_SERVER.fields, *_TUBE.fields, *_JOB.fields})  # skip _KEY


def parse_server_stats(body: bytes) -> ServerStats:
    """Parse the body of a ``stats`` reply.

    Args:
        body: The YAML chunk of the ``OK`` reply.

    Returns:
        The typed statistics; keys this class does not know are in ``extra``, and keys an
        older server does not send have their neutral default.

    Raises:
        ProtocolError: The body is not a ``key: value`` mapping, a value does not fit its
            field's type, or ``pid`` or ``version`` is missing.
    """
    return _SERVER.build(ServerStats, body)


def parse_tube_stats(body: bytes) -> TubeStats:
    """Parse the body of a ``stats-tube`` reply.

    Args:
        body: The YAML chunk of the ``OK`` reply.

    Returns:
        The typed statistics; ``name`` is always the tube name as a string.

    Raises:
        ProtocolError: The body is not a ``key: value`` mapping, a value does not fit its
            field's type, or ``name`` is missing.
    """
    return _TUBE.build(TubeStats, body)


def parse_job_stats(body: bytes) -> JobStats:
    """Parse the body of a ``stats-job`` reply.

    Args:
        body: The YAML chunk of the ``OK`` reply.

    Returns:
        The typed statistics; ``tube`` is always a string, ``state`` a ``JobState``.

    Raises:
        ProtocolError: The body is not a ``key: value`` mapping, a value does not fit its
            field's type (an unknown state, say), or ``id``, ``tube`` or ``state`` is
            missing.
    """
    return _JOB.build(JobStats, body)
