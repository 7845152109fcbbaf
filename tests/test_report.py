"""The HTML revenue report's rules on hand-made snapshots (no warehouse needed).

The report built from real marts is tested in tests/test_finance.py (hand-made ledger
history) and tests/test_finance_close.py (after a real close).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from billhouse.cli import main
from billhouse.finance_snapshot import snapshot_path
from billhouse.report import ReportError, mrr_chart, nice_step, render_report, report_months, write_report
from billhouse.settings import Settings
from tests.test_finance import parse_report

MRR_ROW = {"beginning_cents": 0, "new_cents": 0, "expansion_cents": 0, "contraction_cents": 0,
           "churned_cents": 0, "reactivation_cents": 0}

SNAPSHOT = {
    "as_of": "2026-12-01T00:00:00Z",
    "exported_at": "2026-12-01T00:05:00Z",
    "gross_revenue": [
        {"month": "2026-11-01", "currency": "JPY", "amount_cents": 9802, "invoices_count": 1},
        {"month": "2026-11-01", "currency": "KWD", "amount_cents": 1234, "invoices_count": 1},
        {"month": "2025-11-01", "currency": "KWD", "amount_cents": 99999, "invoices_count": 1},  # outside 12 months
    ],
    "revenue_by_plan": [
        {"month": "2026-11-01", "currency": "JPY", "plan": "tokyo", "amount_cents": 9802},
        {"month": "2026-11-01", "currency": "KWD", "plan": "(add-ons)", "amount_cents": 1234},
    ],
    "invoiced_usage": [],
    "mrr": [
        {**MRR_ROW, "month": "2026-10-01", "currency": "JPY", "new_cents": 9800, "amount_cents": 9800},
        {**MRR_ROW, "month": "2026-11-01", "currency": "JPY", "beginning_cents": 9800, "churned_cents": -9800,
         "amount_cents": 0},
    ],
    "overdue_balance": [],
    "aging": [
        {"external_customer_id": "cus_j", "customer_name": "Jiro <K.K.>", "currency": "JPY",
         "open_invoices_count": 2, "open_amount_cents": 19600, "current_cents": 9800, "past_due_1_30_cents": 0,
         "past_due_31_60_cents": 0, "past_due_61_90_cents": 9800, "past_due_over_90_cents": 0,
         "overdue_cents": 9800},
    ],
}


@pytest.mark.parametrize(
    ("span_cents", "exponent", "step"),
    [
        (14000, 2, 5000),  # 140.00 in 4 steps of 35.00 -> 50.00
        (13000, 2, 5000),
        (2000, 2, 500),
        (500, 2, 200),  # 5.00 -> 2.00
        (3, 2, 1),  # never less than one minor unit
        (0, 2, 100),  # nothing to show: one major unit
        (9800, 0, 5000),  # yen
        (1234, 3, 500),  # 1.234 KWD -> 0.500
    ],
)
def test_tick_step_is_one_two_or_five_times_a_power_of_ten(span_cents: int, exponent: int, step: int) -> None:
    assert nice_step(span_cents, exponent) == step


def test_report_months_end_at_the_as_of_month() -> None:
    assert report_months("2026-02-01T00:00:00Z", 3) == ["2025-12-01", "2026-01-01", "2026-02-01"]


def test_chart_heights_are_proportional_and_movements_diverge_from_the_axis() -> None:
    rows = [
        {**MRR_ROW, "month": "2026-01-01", "new_cents": 1000, "amount_cents": 1000},
        {**MRR_ROW, "month": "2026-02-01", "beginning_cents": 1000, "expansion_cents": 1500,
         "contraction_cents": 0, "churned_cents": -500, "amount_cents": 2000},
    ]
    chart = mrr_chart(rows, ["2026-01-01", "2026-02-01"], "EUR")
    january, february = chart.columns
    assert february.height == pytest.approx(2 * january.height)
    assert january.y + january.height == pytest.approx(chart.mrr_baseline)
    new, expansion, churn = chart.movement_bars
    assert new.y + new.height == pytest.approx(chart.movement_axis)  # gains end on the axis
    assert expansion.y + expansion.height == pytest.approx(chart.movement_axis)
    assert churn.y == pytest.approx(chart.movement_axis)  # losses hang below it
    assert expansion.height == pytest.approx(3 * churn.height)
    assert [t.label for t in chart.mrr_ticks] == ["€0.00", "€5.00", "€10.00", "€15.00", "€20.00"]
    assert (expansion.title, churn.title) == ("Feb 2026 Expansion €15.00", "Feb 2026 Churn -€5.00")


def test_amounts_use_each_currencys_minor_units_and_text_is_escaped() -> None:
    html = render_report(SNAPSHOT)
    report = parse_report(html)
    assert report.kpis[("JPY", "revenue")] == "¥9,802"
    assert report.kpis[("KWD", "revenue")] == "1.234 KWD"  # November 2025 is outside the 12 months
    assert report.kpis[("JPY", "mrr")] == "¥0"  # churned in November
    assert report.tables["mrr-JPY"][1:] == [["Oct 2026", "¥0", "¥9,800", "–", "–", "–", "–", "¥9,800"],
                                            ["Nov 2026", "¥9,800", "–", "–", "–", "–", "-¥9,800", "¥0"]]
    assert report.tables["aging-JPY"][1] == ["Jiro <K.K.>", "¥9,800", "¥0", "¥0", "¥9,800", "¥0", "¥9,800", "¥19,600"]
    assert "Jiro &lt;K.K.&gt;" in html and "<K.K.>" not in html
    assert "(add-ons)" in html


def test_report_command_writes_the_file_and_needs_a_close_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ReportError, match="run `billhouse close` first"):
        write_report(settings)
    assert main(["--data-dir", str(tmp_path), "report"]) == 1
    assert "report: finance snapshot:" in capsys.readouterr().err

    snapshot_path(tmp_path).parent.mkdir(parents=True)
    snapshot_path(tmp_path).write_text(json.dumps(SNAPSHOT))
    assert main(["--data-dir", str(tmp_path), "report"]) == 0
    written = tmp_path / "reporting" / "revenue-report.html"
    assert capsys.readouterr().out.strip() == f"wrote {written}"
    assert parse_report(written.read_text()).kpis[("KWD", "revenue")] == "1.234 KWD"
    with pytest.raises(ReportError, match="months"):
        write_report(settings, months=0)
