"""The compiled Jinja kept on disk (billhouse/jinja_code_cache.py), with dbt's own Jinja
environment, the store's parse that skips rewriting an unchanged manifest.json, and the
parsed project set apart from the garbage collector."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import pytest
from dbt_common.clients import jinja as dbt_jinja
from dbt_common.clients.jinja import get_template
from jinja2.bccache import bc_magic

from billhouse import dbt_runner
from billhouse.dbt_runner import MANIFEST_KEY_FILE, forget_parsed_projects, run_dbt
from billhouse.jinja_code_cache import PRECOMPILED_MARKER, code_cache, stats
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

GREETING = "{% set name = 'ada' %}{% for word in ['hello'] %}{{ word }} {{ name | upper }}{% endfor %}"


def _render(source: str) -> str:
    return get_template(source, {}).render({})


def test_a_compiled_template_is_read_back_from_disk_instead_of_compiled_again(tmp_path: Path) -> None:
    with code_cache(tmp_path):
        assert _render(GREETING) == "hello ADA"
        [entry] = tmp_path.iterdir()
        # the entry of another source under this one's key: what renders is what is read
        farewell = GREETING.replace("hello", "bye")
        _render(farewell)
        [other] = [path for path in tmp_path.iterdir() if path != entry]
        entry.write_bytes(other.read_bytes())
        hits, misses = stats.hits, stats.misses
        assert _render(GREETING) == "bye ADA"
    assert (stats.hits, stats.misses) == (hits + 1, misses)


def test_an_unreadable_entry_is_compiled_again_and_replaced(tmp_path: Path) -> None:
    with code_cache(tmp_path):
        _render(GREETING)
        [entry] = tmp_path.iterdir()
        for damaged in (b"", bc_magic + b"\x00not marshal", b"j2 another python" + entry.read_bytes()[len(bc_magic):]):
            entry.write_bytes(damaged)
            misses = stats.misses
            assert _render(GREETING) == "hello ADA"
            assert stats.misses == misses + 1
            assert entry.read_bytes().startswith(bc_magic) and entry.read_bytes() != damaged
            hits = stats.hits
            assert _render(GREETING) == "hello ADA"
            assert stats.hits == hits + 1


def test_the_key_covers_the_environment_and_nothing_is_kept_outside_a_dbt_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with code_cache(tmp_path):
        _render(GREETING)
        get_template(GREETING, {}, native=True)  # dbt's native environment: other filters
        assert len(list(tmp_path.iterdir())) == 2
        monkeypatch.setattr(dbt_jinja, "MACRO_DEBUGGING", True)  # dbt maps the code to files
        _render(GREETING.replace("ada", "grace"))
        assert len(list(tmp_path.iterdir())) == 2
    monkeypatch.setattr(dbt_jinja, "MACRO_DEBUGGING", False)
    _render(GREETING.replace("ada", "alan"))
    assert len(list(tmp_path.iterdir())) == 2


def test_threads_compiling_one_template_at_once_all_get_it(tmp_path: Path) -> None:
    source = GREETING.replace("ada", "edsger")
    rendered: list[str] = []
    with code_cache(tmp_path):
        threads = [threading.Thread(target=lambda: rendered.append(_render(source))) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert rendered == ["hello EDSGER"] * 8
    assert [path.name.endswith(".tmp") for path in tmp_path.iterdir()] == [False]


def test_a_new_process_on_the_store_compiles_no_template_and_rewrites_no_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbt_runner, "_parsed_projects", {})
    settings = Settings(data_dir=tmp_path)
    with open_warehouse(settings):
        pass  # the raw tables (dbt sources) exist
    frozen = gc.get_freeze_count()
    run_dbt(settings, ["parse"])
    assert gc.get_freeze_count() > frozen  # the parsed project is set apart from collections
    # the parse compiled every macro and node of the project into the store's cache
    assert (settings.dbt_code_cache_dir / PRECOMPILED_MARKER).exists()
    assert len(list(settings.dbt_code_cache_dir.iterdir())) > 500
    manifest = settings.dbt_target_dir / "manifest.json"
    written = manifest.stat().st_mtime_ns

    forget_parsed_projects()  # as a new process: nothing parsed or compiled in memory
    misses = stats.misses
    result = run_dbt(settings, ["--debug", "run", "--select", "+int_pay_in_advance_charges"])
    assert result.summary.startswith("PASS=3 ")
    assert "Partial parsing enabled, no changes found, skipping parsing" in result.output
    assert stats.misses == misses  # every macro the run called came from the cache
    assert manifest.stat().st_mtime_ns == written  # the parse found it current

    # another dbt wrote manifest.json since: the next process's parse writes it again
    os.utime(manifest, ns=(written, written + 1_000_000))
    forget_parsed_projects()
    run_dbt(settings, ["run", "--select", "stg_billhouse__plans"])
    assert manifest.stat().st_mtime_ns not in (written, written + 1_000_000)
    assert str(manifest.stat().st_mtime_ns) in (settings.dbt_target_dir / MANIFEST_KEY_FILE).read_text()
