"""Keep the Python code dbt compiles from the project's Jinja templates on disk.

dbt turns every macro and every model's SQL into Python code with Jinja's compiler (a
parse and a code generation in pure Python, under the GIL) the first time a process
uses it: a close in a new process (``billhouse close``, a Dagster run) spends about
0.7 s of its dbt build on it at 100 000 subscriptions (docs/performance.md, stop 25).
Jinja caches that code across processes only for templates loaded through a loader
(``jinja2.BytecodeCache``); dbt renders from strings, so it does not apply.

This module does for dbt what Jinja's bytecode cache does for loaded templates: while
``code_cache`` is active, the compile step of dbt's two Jinja environments reads the
code object from ``<directory>/<key>`` when present (``marshal``, behind Jinja's own
``bc_magic`` header of the Python version) and writes it there when not. The key hashes
the template source, the environment's class, extensions, filters, tests and options, and
the versions of Jinja, dbt-common and dbt-core, so any change of either compiles again.
An unreadable entry is compiled again and replaced. Entries are written to a temporary
file and renamed: a reader sees a whole entry or none. Deleting the directory is safe.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import marshal
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import jinja2
from jinja2.bccache import bc_magic


@dataclass
class CodeCacheStats:
    """What the cache did since it was last reset (the bench prints it)."""

    hits: int = 0
    misses: int = 0


stats = CodeCacheStats()

_active_directory: Path | None = None
_installed = False
_install_lock = threading.Lock()

PRECOMPILED_MARKER = "precompiled-project"

# the characters that make dbt render a text with Jinja (dbt.clients.jinja.get_rendered)
_RENDERED = re.compile(r"{[{%#]")

_VERSIONS = tuple(importlib.metadata.version(name) for name in ("jinja2", "dbt-common", "dbt-core"))


@contextmanager
def code_cache(directory: Path) -> Iterator[None]:
    """Read and write compiled templates under ``directory`` while the block runs (one
    dbt invocation at a time: billhouse.dbt_runner serializes them)."""
    global _active_directory
    _install()
    directory.mkdir(parents=True, exist_ok=True)
    previous, _active_directory = _active_directory, directory
    try:
        yield
    finally:
        _active_directory = previous


def precompile_templates(manifest: Any, directory: Path, project_key: str) -> None:
    """Compile every macro and every node's SQL of a parsed project into the cache under
    ``directory``, as dbt compiles them (once per ``project_key``: a store's first parse,
    or its first after the project changed): a store's first close then finds the macros
    it runs compiled already. 1.4 s for the project's 760 macros (stop 25)."""
    from dbt_common.clients.jinja import get_template

    marker = directory / PRECOMPILED_MARKER
    try:
        if marker.read_text() == project_key:
            return
    except OSError:
        pass
    with code_cache(directory):
        for node in [*manifest.macros.values(), *manifest.nodes.values()]:
            source = getattr(node, "macro_sql", None) or getattr(node, "raw_code", "")
            if not _RENDERED.search(source):
                continue  # dbt returns such text as it is, without compiling it
            try:
                get_template(source, {}, node=node)
            except jinja2.TemplateError:
                continue  # dbt reports it when it renders the node
    marker.write_text(project_key)


def _install() -> None:
    """Wrap the compile method of dbt's Jinja environment, once per process (its native
    environment, which renders configs, is a subclass)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from dbt_common.clients import jinja as dbt_jinja

        environment_class = dbt_jinja.MacroFuzzEnvironment
        environment_class.compile = _cached_compile(environment_class.compile)  # type: ignore[method-assign]
        _installed = True


def _cached_compile(compile_template: Any) -> Any:
    def compile(  # noqa: A001 - the name of the method it wraps
        self: jinja2.Environment,
        source: Any,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        directory = _active_directory
        if directory is None or raw or not isinstance(source, str) or _macro_debugging():
            return compile_template(self, source, name, filename, raw, defer_init)
        path = directory / _entry_key(self, source, name, filename, defer_init)
        code = _read_entry(path)
        if code is not None:
            stats.hits += 1
            return code
        code = compile_template(self, source, name, filename, raw, defer_init)
        stats.misses += 1
        _write_entry(path, code)
        return code

    return compile


def _macro_debugging() -> bool:
    """dbt's DBT_MACRO_DEBUGGING maps compiled code to files of its own: compile afresh."""
    from dbt_common.clients import jinja as dbt_jinja

    return bool(dbt_jinja.MACRO_DEBUGGING)


def _entry_key(
    environment: jinja2.Environment, source: str, name: str | None, filename: str | None, defer_init: bool
) -> str:
    environment_class = type(environment)
    options = (
        f"{environment_class.__module__}.{environment_class.__qualname__}",
        sorted(environment.extensions),
        sorted(environment.filters),
        sorted(environment.tests),
        f"{environment.undefined.__module__}.{environment.undefined.__qualname__}",
        environment.optimized,
        environment.autoescape if isinstance(environment.autoescape, bool) else repr(environment.autoescape),
        environment.is_async,
        environment.newline_sequence,
        environment.keep_trailing_newline,
        environment.trim_blocks,
        environment.lstrip_blocks,
        environment.block_start_string,
        environment.block_end_string,
        environment.variable_start_string,
        environment.variable_end_string,
        environment.comment_start_string,
        environment.comment_end_string,
        environment.line_statement_prefix,
        environment.line_comment_prefix,
        _VERSIONS,
        name,
        filename,
        defer_init,
    )
    digest = hashlib.sha256(repr(options).encode())
    digest.update(b"\0")
    digest.update(source.encode())
    return digest.hexdigest()


def _read_entry(path: Path) -> CodeType | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(bc_magic):
        return None
    try:
        code = marshal.loads(data[len(bc_magic):])
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def _write_entry(path: Path, code: CodeType) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temporary.write_bytes(bc_magic + marshal.dumps(code))
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)  # a cache: the code compiled is returned all the same
