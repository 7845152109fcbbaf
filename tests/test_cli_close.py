"""`billhouse close --since --timezone` closes one timezone's window, as a Dagster close
does; a bad flag is refused in one line before anything runs."""

from __future__ import annotations

import copy
import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from billhouse.catalog import parse_catalog
from billhouse.cli import main
from billhouse.close import load_inputs
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings

from .conftest import CATALOG, FIRST_BATCH


@pytest.fixture(scope="module")
def utc_close(tmp_path_factory: pytest.TempPathFactory) -> str:
    data_dir = Path(tmp_path_factory.mktemp("cli-close"))
    document = copy.deepcopy(CATALOG)
    document["customers"][2]["timezone"] = "Asia/Tokyo"  # cus_j closes with Tokyo, not here
    settings = Settings(data_dir=data_dir)
    load_inputs(settings, parse_catalog(document), FIRST_BATCH)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            assert main(["--data-dir", str(data_dir), "close", "--as-of", "2026-11-01T00:00:00Z",
                         "--since", "2026-10-31T00:00:00Z", "--timezone", "UTC", "--all-checks"]) == 0
        yield out.getvalue()
    finally:
        stop_ledger(settings)


def test_a_timezone_close_invoices_only_that_timezones_customers(utc_close: str) -> None:
    customers = re.findall(r"^BH-\d{6}\s+(\S+)", utc_close, re.M)
    assert sorted(customers) == ["cus_a", "cus_b"]


def test_all_checks_runs_every_test_of_the_billing_selector(utc_close: str) -> None:
    """--all-checks: the unit tests and full-scan checks too, not only the drafts' tests."""
    [total] = re.findall(r"^dbt: .*?TOTAL=(\d+)", utc_close, re.M)
    assert int(total) > 250  # the close selector alone builds about 55 nodes


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--as-of", "2026-11-01T00:00:00Z", "--timezone", "Mars/Base"], "unknown IANA timezone 'Mars/Base'"),
        (["--as-of", "2026-11-01T00:00:00Z", "--since", "yesterday"], "--since: field 'since'"),
        (["--as-of", "2026-11-01"], "no UTC offset"),
    ],
)
def test_bad_close_flags_are_refused_in_one_line(tmp_path, capsys, flags: list[str], message: str) -> None:
    assert main(["--data-dir", str(tmp_path), "close", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
