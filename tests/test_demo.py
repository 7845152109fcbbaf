"""`billhouse demo` bills the generated month end to end, and the PDFs it writes carry
the totals its summary prints."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from pypdf import PdfReader

from billhouse.cli import main
from billhouse.demo import demo_events
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory):
    data_dir = Path(tmp_path_factory.mktemp("demo"))
    outputs = []
    try:
        for _ in range(2):
            out = io.StringIO()
            with redirect_stdout(out):
                assert main(["--data-dir", str(data_dir), "demo"]) == 0
            outputs.append(out.getvalue())
        yield data_dir, outputs
    finally:
        stop_ledger(Settings(data_dir=data_dir))


SUMMARY_ROW = re.compile(r"^(BH-\d{6})\s+(\S+)\s+.+?\s+(\d{4}-\d{2}-\d{2})\s+(\S+)\s+(new|existing)$", re.M)


def test_demo_invoices_every_customer_for_both_months(demo_runs) -> None:
    _, (first, _) = demo_runs
    rows = SUMMARY_ROW.findall(first)
    assert len(rows) == 12  # 6 customers x October, November
    assert [r[0] for r in rows] == [f"BH-{n:06d}" for n in range(1, 13)]
    assert {r[3][0] for r in rows} == {"€", "$", "¥"}  # three currencies
    assert "resent duplicates" in first


def test_demo_pdfs_carry_the_printed_totals(demo_runs) -> None:
    data_dir, (first, _) = demo_runs
    for number, customer, _, total, _ in SUMMARY_ROW.findall(first):
        pdf = data_dir / "invoices" / f"{number}.pdf"
        text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
        assert number in text and total in text, (number, customer, total)


def test_rerunning_the_demo_changes_nothing(demo_runs) -> None:
    _, (first, second) = demo_runs
    assert "0 new invoices, 12 already finalized" in second
    strip = lambda text: [(n, c, d, t) for n, c, d, t, _ in SUMMARY_ROW.findall(text)]  # noqa: E731
    assert strip(first) == strip(second)


def test_demo_data_has_thousands_of_events_and_duplicates() -> None:
    events = demo_events()
    identities = {(e["external_subscription_id"], e["transaction_id"]) for e in events}
    assert len(events) > 5000
    assert len(events) - len(identities) > 100
