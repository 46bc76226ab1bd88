"""Layering and public-surface checks: imports, ``__all__``, and the drawn error tree."""

from __future__ import annotations

import ast
import builtins
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import rxbeanstalk
import rxbeanstalk.errors as errors
import rxbeanstalk.protocol as protocol
from rxbeanstalk.errors import CommandError, error_for_status
from tests.conftest import REPLY_WORDS

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------- (a) the sans-IO layer

FORBIDDEN = ("asyncio", "socket", "selectors", "reactivex")

# Import rxbeanstalk.protocol without running rxbeanstalk/__init__.py (which imports the
# asyncio layers): a bare package object stands in for the parent, so every module that
# appears afterwards was imported by the protocol package itself.
_PROBE = """
import importlib.util, json, sys, types
spec = importlib.util.find_spec("rxbeanstalk")
parent = types.ModuleType("rxbeanstalk")
parent.__path__ = list(spec.submodule_search_locations)
sys.modules["rxbeanstalk"] = parent
before = set(sys.modules)
import rxbeanstalk.protocol
print(json.dumps({"before": sorted(before), "after": sorted(sys.modules)}))
"""


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.fixture(scope="module")
def protocol_imports() -> tuple[set[str], set[str]]:
    """Modules present before and after importing only ``rxbeanstalk.protocol``."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(done.stdout)
    return set(found["before"]), set(found["after"])


def test_protocol_imports_no_io_or_reactive_module(
    protocol_imports: tuple[set[str], set[str]],
) -> None:
    before, after = protocol_imports
    for package in FORBIDDEN:
        assert not any(_is_under(name, package) for name in before), "probe is not clean"
        imported = sorted(name for name in after if _is_under(name, package))
        assert not imported, f"rxbeanstalk.protocol imported {imported}"


def test_protocol_imports_only_itself_and_errors_from_rxbeanstalk(
    protocol_imports: tuple[set[str], set[str]],
) -> None:
    _, after = protocol_imports
    ours = {name for name in after if _is_under(name, "rxbeanstalk")}
    allowed = {"rxbeanstalk", "rxbeanstalk.errors"}
    assert {n for n in ours if not _is_under(n, "rxbeanstalk.protocol")} == allowed
    assert "rxbeanstalk.protocol._parser" in ours  # the probe did import the package
    assert "yaml" in after  # allowed: the stats parsers use PyYAML's BaseLoader


# --------------------------------------------------------------------- (b) __all__

PUBLIC_MODULES = [rxbeanstalk, errors, protocol]


def ruff_sort_key(name: str) -> tuple[int, list[tuple[str, int]]]:
    """The order of ruff's RUF022 ("isort-style"): category, then a natural sort.

    Categories: SCREAMING_SNAKE_CASE constants (more than one character, at least one
    upper-case letter and no lower-case one), then names starting with an upper-case
    letter (classes), then everything else. Within a category names compare character
    by character (case-sensitive), runs of digits by their value.
    """
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        category = 0
    elif name[:1].isupper():
        category = 1
    else:
        category = 2
    # A digit run sorts where its first digit would among the other characters ("0"),
    # and by its value among other digit runs.
    natural = [
        ("0", int(part)) if part.isdigit() else (part, 0) for part in re.findall(r"\d+|\D", name)
    ]
    return category, natural


def test_ruff_sort_key_examples() -> None:
    names = ["parse_x", "Reply", "MAX_U32", "ListTubes", "ListTubeUsed", "DEFAULT_TTR", "A2", "A10"]
    assert sorted(names, key=ruff_sort_key) == [
        "A2",  # upper case with a digit: a constant
        "A10",
        "DEFAULT_TTR",
        "MAX_U32",
        "ListTubeUsed",
        "ListTubes",
        "Reply",
        "parse_x",
    ]


def bound_names(module: ModuleType) -> set[str]:
    """Public names a module binds at top level (defined or imported), from its source."""
    tree = ast.parse(inspect.getsource(module))
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    names.add((alias.asname or alias.name).split(".")[0])
            elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                if isinstance(node.target, ast.Name):
                    names.add(node.target.id)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                if isinstance(node, ast.Try):
                    visit(node.finalbody)
                    for handler in node.handlers:
                        visit(handler.body)

    visit(tree.body)
    return {name for name in names if not name.startswith("_") and name != "*"}


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_sorted(module: ModuleType) -> None:
    listed = list(module.__all__)
    assert listed == sorted(listed, key=ruff_sort_key)
    assert len(set(listed)) == len(listed), "__all__ lists a name twice"


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_complete(module: ModuleType) -> None:
    listed = set(module.__all__)
    for name in listed:
        assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name!r}"
    public = {
        name
        for name in bound_names(module)
        if not isinstance(getattr(module, name, None), ModuleType)
    }
    assert public - listed == set(), f"{module.__name__} does not export these"
    assert listed - public == set(), f"{module.__name__}.__all__ lists names it never binds"


def test_star_import_gives_exactly_all() -> None:
    for module in PUBLIC_MODULES:
        namespace: dict[str, object] = {}
        exec(f"from {module.__name__} import *", namespace)
        namespace.pop("__builtins__")
        assert set(namespace) == set(module.__all__)


def test_every_error_class_is_exported_from_the_package() -> None:
    classes = [
        name
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, BaseException)
    ]
    assert classes
    missing = [name for name in classes if name not in rxbeanstalk.__all__]
    assert not missing
    for name in classes:
        assert getattr(rxbeanstalk, name) is getattr(errors, name)


# ------------------------------------------------------------------ (c) the error tree

_TREE_LINE = re.compile(r"^(?P<indent>(?:[│ ]   )*)(?:[├└]── )?(?P<name>[A-Z]\w*)(?P<rest>.*)$")


def drawn_tree() -> list[tuple[int, str, str]]:
    """(depth, class name, rest of the line) for each line of the docstring's tree."""
    doc = errors.__doc__
    assert doc is not None
    lines = doc.split("The tree::", 1)[1].split("\n")
    block: list[str] = []
    for line in lines[1:]:
        if block and not line.strip():
            break
        if line.strip():
            block.append(line)
    margin = min(len(line) - len(line.lstrip()) for line in block)
    entries = []
    for line in block:
        text = line[margin:]
        match = _TREE_LINE.match(text)
        assert match, f"cannot read tree line {text!r}"
        depth = len(match["indent"]) // 4 + (1 if "──" in text else 0)
        entries.append((depth, match["name"], match["rest"]))
    return entries


def test_tree_is_read() -> None:
    tree = drawn_tree()
    assert tree[0][:2] == (0, "BeanstalkError")
    assert (2, "NotFoundError") in [entry[:2] for entry in tree]
    assert (3, "JobLostError") in [entry[:2] for entry in tree]
    assert len({name for _, name, _ in tree}) == len(tree)


def test_error_tree_matches_the_classes() -> None:
    parents: list[str] = []
    seen = set()
    for depth, name, rest in drawn_tree():
        assert name in errors.__all__, f"{name} is drawn but not exported"
        cls = getattr(errors, name)
        assert isinstance(cls, type) and issubclass(cls, Exception)
        del parents[depth:]
        if parents:
            parent = getattr(errors, parents[-1])
            assert parent in cls.__bases__, f"{name} should subclass {parents[-1]} directly"
        else:
            assert cls.__bases__ == (Exception,)
        parents.append(name)
        seen.add(name)
        # "(also ValueError)" and the like name an extra builtin base.
        for extra in re.findall(r"\(also (\w+)\)", rest):
            assert issubclass(cls, getattr(builtins, extra)), f"{name} is not a {extra}"
        # A class for a reply word says which word on its line.
        status = getattr(cls, "status", "")
        if status:
            assert status in rest, f"{name}'s line does not name {status}"
    drawn_or_not = {
        name
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, errors.BeanstalkError)
    }
    assert drawn_or_not == seen, "every error class is drawn, and only those"


def test_invalid_argument_error_is_a_value_error() -> None:
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.InvalidArgumentError, errors.BeanstalkError)
    assert issubclass(errors.CommandTimeoutError, TimeoutError)


def test_no_builtin_name_is_shadowed() -> None:
    for module in PUBLIC_MODULES:
        shadowed = [name for name in module.__all__ if hasattr(builtins, name)]
        assert not shadowed, f"{module.__name__} shadows builtins {shadowed}"


# ---------------------------------------------------------------- (d) error_for_status

ERROR_WORDS = {
    "NOT_FOUND": errors.NotFoundError,
    "TIMED_OUT": errors.TimedOutError,
    "DEADLINE_SOON": errors.DeadlineSoonError,
    "NOT_IGNORED": errors.NotIgnoredError,
    "BURIED": errors.BuriedError,
    "DRAINING": errors.DrainingError,
    "JOB_TOO_BIG": errors.JobTooBigError,
    "EXPECTED_CRLF": errors.ExpectedCrlfError,
    "OUT_OF_MEMORY": errors.OutOfMemoryError,
    "INTERNAL_ERROR": errors.InternalError,
    "BAD_FORMAT": errors.BadFormatError,
    "UNKNOWN_COMMAND": errors.UnknownCommandError,
}


def test_error_for_status_maps_exactly_the_12_error_words() -> None:
    assert len(REPLY_WORDS) == 23
    assert len(ERROR_WORDS) == 12
    mapped = {word: error_for_status(word) for word in REPLY_WORDS}
    assert {word: cls for word, cls in mapped.items() if cls is not None} == ERROR_WORDS
    for word, cls in ERROR_WORDS.items():
        assert issubclass(cls, CommandError)
        assert cls.status == word
    assert len(set(ERROR_WORDS.values())) == 12


@pytest.mark.parametrize("word", ["", "not_found", "NOT FOUND", "OK", "GONE", "ServerError"])
def test_error_for_status_of_other_words_is_none(word: str) -> None:
    assert error_for_status(word) is None


def test_server_errors_are_the_four_any_command_can_get() -> None:
    server = {w for w, cls in ERROR_WORDS.items() if issubclass(cls, errors.ServerError)}
    assert server == {"OUT_OF_MEMORY", "INTERNAL_ERROR", "BAD_FORMAT", "UNKNOWN_COMMAND"}
