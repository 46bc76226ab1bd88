"""Sphinx configuration of the rxbeanstalk documentation site (``make docs``).

Pages are MyST markdown; the notebooks in ``notebooks/`` (reached through the
``docs/notebooks`` symlink) are executed during every build by myst-nb, each against the
throwaway beanstalkd it starts itself, and any cell error fails the build. The API
reference is generated from the Google-style docstrings (autodoc + napoleon), and the
build checks that every public name of the documented modules has an entry.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from docutils.nodes import Element, paragraph
from sphinx.addnodes import desc_content, pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext.napoleon import _process_docstring as napoleon_process_docstring
from sphinx.util import logging
from sphinx.util.nodes import make_refnode

import rxbeanstalk

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# -- project -------------------------------------------------------------------------------

project = "rxbeanstalk"
author = "the rxbeanstalk authors"
copyright = "the rxbeanstalk authors"
release = rxbeanstalk.__version__
version = release

extensions = [
    "myst_nb",  # MyST markdown (myst-parser) and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "notebooks/*.md"]
templates_path: list[str] = []

# Every warning is an error (-W in the Makefile), and with -n every cross-reference must
# resolve: a broken link or an API name that lost its entry fails the build.
nitpicky = True
# There is no network at build time, so no intersphinx: names from the standard library
# and from other packages are printed as they are, and not reported as unresolved.
nitpick_ignore_regex = [
    (r"py:.*", r"(collections\.abc|typing|types|enum|os|io|asyncio|concurrent|threading)\..*"),
    (r"py:.*", r"(reactivex|aioreactive|matplotlib|IPython|pytest)(\..*)?"),
    # Names the code imports only for type checking, so autodoc sees them as bare strings.
    (r"py:class", r"Observable|Figure|Axes|Line2D"),
    # Type variables.
    (r"py:(class|obj)", r"(rxbeanstalk\.[\w.]+\.)?T"),
    # Internal bases of the protocol's command classes.
    (r"py:class", r"rxbeanstalk\.protocol\._commands\._(JobCommand|TubeCommand|PeekState)"),
]

# -- MyST and myst-nb ------------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist"]
# Anchors for headings down to ###, so [text](#some-heading) links work as on GitHub.
myst_heading_anchors = 3

# Execute every notebook on every build, in its own directory, with the "python3" kernel
# (docs/_jupyter's, as the Makefile sets JUPYTER_PATH: the python running this build); an
# error in any cell, or a cell over the timeout, fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 120  # seconds per cell; the slowest (notebook 03's producer) takes ~10 s
nb_execution_allow_errors = False
nb_merge_streams = True

# -- autodoc and napoleon --------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
# (No default "members": in autodoc a default of True overrides a directive's own list.)
autodoc_default_options = {"show-inheritance": True}
add_module_names = False
python_use_unqualified_type_names = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = True

# Classes that only the library makes (the client's methods return them): documented
# without a constructor signature or constructor arguments, which are internals.
MADE_BY_THE_LIBRARY = {
    "rxbeanstalk.Job",
    "rxbeanstalk._job.Job",
    "rxbeanstalk._observable.CommandObservable",
    "rxbeanstalk._stream.ReserveStream",
    "rxbeanstalk._iter.ReserveIterator",
    "rxbeanstalk._stats_stream.StatsStream",
    "rxbeanstalk.StatsSnapshot",
    "rxbeanstalk._cluster_stream.ClusterStream",
    "rxbeanstalk._asyncrx_stream.AsyncReserveStream",
    "rxbeanstalk.notebook.Monitor",
}

# -- HTML ------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"rxbeanstalk {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# -- hooks -----------------------------------------------------------------------------------

logger = logging.getLogger(__name__)

# Every name in the __all__ of these modules must have an entry in the API reference:
# under that module, under the module that defines it, or (constants) under any name that
# holds the same object, such as rxbeanstalk.protocol._limits.MAX_U32.
DOCUMENTED_MODULES = (
    "rxbeanstalk",
    "rxbeanstalk.errors",
    "rxbeanstalk.operators",
    "rxbeanstalk.asyncrx",
    "rxbeanstalk.notebook",
    "rxbeanstalk.testing",
    "rxbeanstalk.testing.pytest_plugin",
    "rxbeanstalk.protocol",
)


def _documented_as(full_name: str) -> object:
    """The object a documented name stands for (``None`` if it cannot be imported)."""
    module_name, _, attribute = full_name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        return None


def _check_public_names(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (so fail the build) about a public name that has no API reference entry."""
    documented = set(env.get_domain("py").objects)  # type: ignore[attr-defined]
    by_last_part: dict[str, list[str]] = {}
    for full_name in documented:
        by_last_part.setdefault(full_name.rpartition(".")[2], []).append(full_name)
    for module_name in DOCUMENTED_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if f"{module_name}.{name}" in documented:
                continue
            defined_in = getattr(obj, "__module__", None)
            qualname = getattr(obj, "__qualname__", None)
            if isinstance(qualname, str) and f"{defined_in}.{qualname}" in documented:
                continue
            if not isinstance(qualname, str) and any(
                _documented_as(other) is obj for other in by_last_part.get(name, ())
            ):
                continue
            logger.warning(
                "public name %s.%s has no entry in the API reference (docs/api/)",
                module_name,
                name,
                type="rxbeanstalk",
                subtype="undocumented",
            )


def _napoleon_without_inline_types(app: Sphinx) -> None:
    """Have napoleon read property and attribute docstrings as it reads a method's.

    Napoleon takes the first line of an attribute's docstring for ``type: text`` when it
    has a colon; in this code base such a line ("Whether ...: ...") is prose, and the
    types come from the annotations. Their ``Raises:`` sections still need napoleon, so
    only the kind of object it is told changes.
    """
    listeners = app.events.listeners["autodoc-process-docstring"]
    (napoleon,) = [
        listener for listener in listeners if listener.handler is napoleon_process_docstring
    ]
    app.disconnect(napoleon.id)

    def process(
        app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
    ) -> None:
        if what in ("property", "attribute", "data"):
            what = "method"
        napoleon_process_docstring(app, what, name, obj, options, lines)  # type: ignore[arg-type]

    app.connect("autodoc-process-docstring", process, priority=napoleon.priority)


# The docstrings write plurals of code names the Markdown way, ``Job``s; reStructuredText
# wants an escaped space between the literal and the "s" (``Job``\ s), or it reads on to
# the next ``.
_LITERAL_THEN_LETTER = re.compile(r"(``[^`\s]+``)(?=[A-Za-z0-9])")


def _plural_literals(
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    lines[:] = [_LITERAL_THEN_LETTER.sub(r"\1\\ ", line) for line in lines]


def _made_by_the_library(name: str, obj: object) -> bool:
    full = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    return name in MADE_BY_THE_LIBRARY or full in MADE_BY_THE_LIBRARY


def _no_constructor_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    if what == "class" and _made_by_the_library(name, obj):
        return "", return_annotation
    return None


def _no_constructor_arguments(
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """Drop the ``Args:`` section of a class only the library makes."""
    if what != "class" or not _made_by_the_library(name, obj):
        return
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.strip() == "Args:":
            skipping = True
            continue
        if skipping and line and not line.startswith((" ", "\t")):
            skipping = False
        if not skipping:
            kept.append(line)
    lines[:] = kept


def _resolve_unique_short_name(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve a reference by its last part(s) when exactly one entry ends with them.

    Docstrings say :class:`BeanstalkdServer` in a module that only imports it; the
    entry is ``rxbeanstalk.testing.BeanstalkdServer``. A name that several entries end
    with stays unresolved (and is reported).
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    found = {
        (entry.docname, entry.node_id): name
        for name, entry in objects.items()
        if name.endswith(f".{target}") and not entry.aliased
    }
    if len(found) != 1:
        return None
    ((docname, node_id), name) = found.popitem()
    return make_refnode(app.builder, node["refdoc"], docname, node_id, contnode, name)


def _no_object_base(app: Sphinx, name: str, obj: object, options: Any, bases: list[type]) -> None:
    """``Bases: object`` says nothing, nor does a private mixin; leave them out.

    ``Closing`` only gives ``Client`` and ``Cluster`` their ``with`` blocks, which their
    own docstrings describe. (The empty line left behind goes below.)
    """
    bases[:] = [
        base for base in bases if base is not object and base.__module__ != "rxbeanstalk._closing"
    ]


def _no_empty_bases_line(app: Sphinx, domain: str, objtype: str, content: desc_content) -> None:
    """Drop the "Bases:" paragraph of a class whose only base was ``object``."""
    for child in list(content.children):
        if isinstance(child, paragraph) and child.astext().strip() == "Bases:":
            content.remove(child)


# Pages are written to read well on GitHub too, so they may link to files elsewhere in the
# repository by relative path ([soak/README.md](../soak/README.md)). Those files are not
# part of the site: such a link is shown as the file's path, in code.
_LINK_OUT_OF_DOCS = re.compile(r"\[([^\]\n]+)\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")


def _unlink_files_outside_docs(app: Sphinx, docname: str, source: list[str]) -> None:
    page = Path(app.env.doc2path(docname))
    if page.suffix != ".md":
        return

    def replace(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        resolved = (page.parent / target).resolve()
        if resolved.is_relative_to(HERE):
            return match.group(0)
        path = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else target
        if text.strip("`") == path:
            return f"`{path}`"
        return f"{text} (`{path}`)"

    source[0] = _LINK_OUT_OF_DOCS.sub(replace, source[0])


# docs/benchmarks.md shows benchmarks/results/latest.md (written by `make bench`) where it
# says <!-- benchmark-results -->, or a note when no run has written it yet.
BENCHMARK_RESULTS = ROOT / "benchmarks" / "results" / "latest.md"
BENCHMARK_MARKER = "<!-- benchmark-results -->"


def _insert_benchmark_results(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname != "benchmarks" or BENCHMARK_MARKER not in source[0]:
        return
    if BENCHMARK_RESULTS.is_file():
        relative = Path("..") / BENCHMARK_RESULTS.relative_to(ROOT)
        # Its own title ("# rxbeanstalk benchmarks") is left out: this page has one.
        first_line = BENCHMARK_RESULTS.read_text(encoding="utf-8").partition("\n")[0]
        skip = ":start-line: 1\n" if first_line.startswith("# ") else ""
        block = f"```{{include}} {relative.as_posix()}\n{skip}```\n"
    else:
        block = (
            ":::{note}\nNo benchmark results yet: `make bench` writes "
            "`benchmarks/results/latest.md`, and the next `make docs` shows them here.\n:::\n"
        )
    source[0] = source[0].replace(BENCHMARK_MARKER, block)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register this site's hooks (conf.py's setup runs after every extension's)."""
    _napoleon_without_inline_types(app)
    # Before napoleon (priority 500), which turns the sections into fields.
    app.connect("autodoc-process-docstring", _plural_literals, priority=400)
    app.connect("autodoc-process-docstring", _no_constructor_arguments, priority=400)
    app.connect("autodoc-process-signature", _no_constructor_signature)
    app.connect("autodoc-process-bases", _no_object_base)
    app.connect("object-description-transform", _no_empty_bases_line)
    app.connect("source-read", _unlink_files_outside_docs)
    app.connect("source-read", _insert_benchmark_results)
    app.connect("env-check-consistency", _check_public_names)
    app.connect("missing-reference", _resolve_unique_short_name)
    return {"parallel_read_safe": True}
