"""The HTML revenue report: MRR with its movements, revenue by plan, receivables aging.

``billhouse report`` renders one self-contained HTML file (inline CSS and SVG; no
script, font or image is fetched) from the finance snapshot the last close exported
(finance_snapshot.py), so it never opens the warehouse: it can run while a close
holds the embedded store. Each currency gets its own section (currencies are never
converted), over the last ``months`` months up to the snapshot's as-of month. Money
stays integer minor units and is formatted by ``invoicing.money``; only the charts'
SVG coordinates are floats (a coordinate is not money).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2

from billhouse.errors import BillhouseError
from billhouse.finance_snapshot import load_snapshot
from billhouse.settings import Settings
from invoicing.money import currency_exponent, format_minor_units

TEMPLATE_PATH = Path(__file__).with_name("report_template.html")
DEFAULT_MONTHS = 12

# MRR movements in stacking order: gains above the axis, losses below it.
MOVEMENTS: tuple[tuple[str, str, str], ...] = (
    ("new_cents", "New", "#2f7d4f"),
    ("expansion_cents", "Expansion", "#6fbf73"),
    ("reactivation_cents", "Reactivation", "#3d8fb8"),
    ("contraction_cents", "Contraction", "#e8a33d"),
    ("churned_cents", "Churn", "#c8463d"),
)
AGING_BUCKETS: tuple[tuple[str, str, str], ...] = (
    ("current_cents", "Current", "#8fb9a8"),
    ("past_due_1_30_cents", "1–30 days", "#f2c14e"),
    ("past_due_31_60_cents", "31–60 days", "#f08a4b"),
    ("past_due_61_90_cents", "61–90 days", "#d5573b"),
    ("past_due_over_90_cents", "90+ days", "#8c2f39"),
)
PLAN_COLORS = ("#3b5b92", "#5b8bd0", "#7fa8d8", "#a4c2e6", "#c7d9ef", "#8f9bb3")


class ReportError(BillhouseError):
    """The report cannot be written; ``field`` names what is missing and ``reason`` why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"report: {field}: {reason}")


# --- chart geometry -------------------------------------------------------------------


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str  # tooltip: what the bar is, in currency


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str


@dataclass
class ColumnChart:
    """Months on x; ending MRR as columns (top panel), movements diverging (bottom)."""

    width: int
    height: int
    columns: list[Rect] = field(default_factory=list)
    column_labels: list[Label] = field(default_factory=list)
    movement_bars: list[Rect] = field(default_factory=list)
    month_labels: list[Label] = field(default_factory=list)
    mrr_ticks: list[Tick] = field(default_factory=list)
    movement_ticks: list[Tick] = field(default_factory=list)
    mrr_baseline: float = 0.0
    movement_axis: float = 0.0
    plot_left: float = 0.0
    plot_right: float = 0.0
    movement_top: float = 0.0


@dataclass(frozen=True)
class HorizontalBar:
    label: str
    sublabel: str
    amount: str
    segments: tuple[Rect, ...]


def nice_step(span_cents: int, exponent: int, target_ticks: int = 4) -> int:
    """A round tick step in minor units (1, 2 or 5 x 10^k major units, at least one
    minor unit) such that ``target_ticks`` steps cover ``span_cents``."""
    if span_cents <= 0:
        return 10**exponent
    raw = Decimal(span_cents) / target_ticks
    magnitude = Decimal(1)
    while magnitude * 10 <= raw:
        magnitude *= 10
    while magnitude > raw and magnitude > 1:
        magnitude /= 10
    for factor in (1, 2, 5, 10):
        if magnitude * factor >= raw:
            return max(int(magnitude * factor), 1)
    return int(magnitude * 10)


def _scale(value_cents: int, per_pixel: float) -> float:
    return float(Decimal(value_cents)) / per_pixel if per_pixel else 0.0


def mrr_chart(rows: list[dict[str, Any]], months: list[str], currency: str) -> ColumnChart:
    """Geometry of the MRR chart for one currency's monthly snapshot rows."""
    by_month = {row["month"]: row for row in rows}
    width, left, right = 880, 96, 16
    top_height, gap, bottom_height, top_margin, month_band = 180, 30, 120, 22, 28
    chart = ColumnChart(width=width, height=top_margin + top_height + gap + bottom_height + month_band)
    chart.plot_left, chart.plot_right = left, width - right
    slot = (width - left - right) / max(len(months), 1)
    bar_width = min(slot * 0.56, 56.0)
    exponent = currency_exponent(currency)

    ending = [by_month.get(m, {}).get("amount_cents", 0) for m in months]
    top_max = max([*ending, 0])
    step = nice_step(top_max, exponent)
    top_limit = max(step * -(-top_max // step), step)
    per_pixel = top_limit / top_height
    chart.mrr_baseline = top_margin + top_height
    chart.mrr_ticks = [
        Tick(chart.mrr_baseline - _scale(v, per_pixel), format_minor_units(v, currency))
        for v in range(0, top_limit + 1, step)
    ]

    gains = [sum(by_month.get(m, {}).get(k, 0) for k, _, _ in MOVEMENTS[:3]) for m in months]
    losses = [sum(by_month.get(m, {}).get(k, 0) for k, _, _ in MOVEMENTS[3:]) for m in months]
    up, down = max([*gains, 0]), -min([*losses, 0])
    move_step = nice_step(max(up + down, 1), exponent, target_ticks=3)
    up_limit = move_step * -(-up // move_step)
    down_limit = move_step * -(-down // move_step)
    if up_limit + down_limit == 0:
        up_limit = move_step
    move_per_pixel = (up_limit + down_limit) / bottom_height
    chart.movement_top = chart.mrr_baseline + gap
    chart.movement_axis = chart.movement_top + _scale(up_limit, move_per_pixel)
    chart.movement_ticks = [
        Tick(chart.movement_axis - _scale(v, move_per_pixel), format_minor_units(v, currency))
        for v in range(-down_limit, up_limit + 1, move_step)
    ]

    for index, month in enumerate(months):
        row = by_month.get(month, {})
        center = left + slot * index + slot / 2
        x = center - bar_width / 2
        label = _month_label(month)
        chart.month_labels.append(Label(center, chart.height - 8, label))
        amount = row.get("amount_cents", 0)
        if amount:
            h = _scale(amount, per_pixel)
            chart.columns.append(Rect(x, chart.mrr_baseline - h, bar_width, h, "#3b5b92",
                                      f"{label} MRR {format_minor_units(amount, currency)}"))
            chart.column_labels.append(Label(center, chart.mrr_baseline - h - 6, format_minor_units(amount, currency)))
        above, below = chart.movement_axis, chart.movement_axis
        for key, name, color in MOVEMENTS:
            value = row.get(key, 0)
            if not value:
                continue
            h = _scale(abs(value), move_per_pixel)
            title = f"{label} {name} {format_minor_units(value, currency)}"
            if value > 0:
                above -= h
                chart.movement_bars.append(Rect(x, above, bar_width, h, color, title))
            else:
                chart.movement_bars.append(Rect(x, below, bar_width, h, color, title))
                below += h
    return chart


def horizontal_bars(
    items: list[tuple[str, str, list[tuple[int, str, str]]]], currency: str, width: float = 520.0
) -> list[HorizontalBar]:
    """Bars scaled to the largest total: (label, sublabel, [(cents, color, name), ...])."""
    totals = [sum(cents for cents, _, _ in segments) for _, _, segments in items]
    largest = max([*totals, 0])
    per_pixel = largest / width if largest else 0.0
    bars = []
    for (label, sublabel, segments), total in zip(items, totals):
        x, rects = 0.0, []
        for cents, color, name in segments:
            if cents <= 0:
                continue
            w = _scale(cents, per_pixel)
            rects.append(Rect(x, 0.0, w, 22.0, color, f"{label}: {name} {format_minor_units(cents, currency)}"))
            x += w
        bars.append(HorizontalBar(label, sublabel, format_minor_units(total, currency), tuple(rects)))
    return bars


# --- the report's view of the snapshot ------------------------------------------------


def _month_label(month: str) -> str:
    return date.fromisoformat(month).strftime("%b %Y")


def report_months(as_of: str, count: int) -> list[str]:
    """The ``count`` months up to the as-of instant's month, oldest first (ISO dates)."""
    instant = datetime.fromisoformat(as_of.replace("Z", "+00:00")).astimezone(timezone.utc)
    year, month = instant.year, instant.month
    months = []
    for _ in range(count):
        months.append(date(year, month, 1).isoformat())
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months[::-1]


@dataclass
class CurrencySection:
    currency: str
    mrr_month: str | None
    mrr: str
    arr: str
    revenue_total: str
    overdue: str
    open_total: str
    mrr_chart: ColumnChart
    mrr_table: list[dict[str, str]]
    plan_bars: list[HorizontalBar]
    revenue_table: list[dict[str, str]]
    aging_bars: list[HorizontalBar]
    aging_table: list[dict[str, str]]
    aging_totals: dict[str, str]
    has_overdue: bool


def _for(rows: list[dict[str, Any]], currency: str, months: list[str]) -> list[dict[str, Any]]:
    window = set(months)
    return [row for row in rows if row["currency"] == currency and row.get("month", months[-1]) in window]


def currency_section(snapshot: dict[str, Any], currency: str, months: list[str]) -> CurrencySection:
    money = lambda cents: format_minor_units(int(cents), currency)  # noqa: E731
    mrr_rows = _for(snapshot["mrr"], currency, months)
    mrr_months = [r["month"] for r in mrr_rows]
    chart_months = [m for m in months if mrr_months and min(mrr_months) <= m <= max(mrr_months)]
    latest = max(mrr_rows, key=lambda r: r["month"], default=None)
    latest_mrr = latest["amount_cents"] if latest else 0

    revenue_rows = _for(snapshot["gross_revenue"], currency, months)
    plan_totals: dict[str, int] = {}
    for row in _for(snapshot["revenue_by_plan"], currency, months):
        plan_totals[row["plan"]] = plan_totals.get(row["plan"], 0) + row["amount_cents"]
    plans = sorted(plan_totals.items(), key=lambda item: (-item[1], item[0]))
    revenue_total = sum(row["amount_cents"] for row in revenue_rows)
    plan_bars = horizontal_bars(
        [(plan, f"{_share(cents, revenue_total)} of revenue", [(cents, PLAN_COLORS[i % len(PLAN_COLORS)], plan)])
         for i, (plan, cents) in enumerate(plans)],
        currency,
    )

    aging_rows = sorted((r for r in snapshot["aging"] if r["currency"] == currency),
                        key=lambda r: (-r["open_amount_cents"], r["external_customer_id"]))
    aging_bars = horizontal_bars(
        [(row["customer_name"] or row["external_customer_id"],
          f"{row['external_customer_id']} · {row['open_invoices_count']} open",
          [(row[key], color, name) for key, name, color in AGING_BUCKETS]) for row in aging_rows],
        currency,
    )
    aging_columns = [key for key, _, _ in AGING_BUCKETS] + ["overdue_cents", "open_amount_cents"]
    aging_totals = {key: money(sum(r[key] for r in aging_rows)) for key in aging_columns}

    return CurrencySection(
        currency=currency,
        mrr_month=_month_label(latest["month"]) if latest else None,
        mrr=money(latest_mrr),
        arr=money(latest_mrr * 12),
        revenue_total=money(revenue_total),
        overdue=aging_totals["overdue_cents"],
        open_total=aging_totals["open_amount_cents"],
        mrr_chart=mrr_chart(mrr_rows, chart_months or months[-1:], currency),
        mrr_table=[
            {"month": _month_label(r["month"]), "beginning": money(r["beginning_cents"]),
             **{key: money(r[key]) if r[key] else "–" for key, _, _ in MOVEMENTS}, "ending": money(r["amount_cents"])}
            for r in sorted(mrr_rows, key=lambda r: r["month"])
        ],
        plan_bars=plan_bars,
        revenue_table=[
            {"month": _month_label(r["month"]), "invoices": str(r["invoices_count"]), "net": money(r["amount_cents"])}
            for r in sorted(revenue_rows, key=lambda r: r["month"])
        ],
        aging_bars=aging_bars,
        aging_table=[{"customer": row["customer_name"] or row["external_customer_id"],
                      **{key: money(row[key]) for key in aging_columns}} for row in aging_rows],
        aging_totals=aging_totals,
        has_overdue=any(row["overdue_cents"] > 0 for row in aging_rows),
    )


def _share(part: int, whole: int) -> str:
    """A percentage for a label (not money): whole percent, half-up."""
    if whole <= 0:
        return "–"
    return f"{(Decimal(part) * 100 / whole).quantize(Decimal(1), rounding=ROUND_HALF_UP)}%"


def render_report(snapshot: dict[str, Any], months: int = DEFAULT_MONTHS) -> str:
    """The report's HTML for a finance snapshot (as ``load_snapshot`` returns it)."""
    if months < 1:
        raise ReportError("months", f"must be at least 1, got {months}")
    window = report_months(snapshot["as_of"], months)
    currencies = sorted({row["currency"] for key in ("mrr", "gross_revenue", "aging") for row in snapshot[key]})
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_PATH.parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template(TEMPLATE_PATH.name)
    return template.render(
        as_of=snapshot["as_of"][:10],
        exported_at=snapshot.get("exported_at", ""),
        first_month=_month_label(window[0]),
        last_month=_month_label(window[-1]),
        sections=[currency_section(snapshot, currency, window) for currency in currencies],
        movements=MOVEMENTS,
        aging_buckets=AGING_BUCKETS,
    )


def default_report_path(settings: Settings) -> Path:
    return settings.data_dir / "reporting" / "revenue-report.html"


def write_report(settings: Settings, out: Path | None = None, months: int = DEFAULT_MONTHS) -> Path:
    """Render the last close's snapshot to ``out`` (default ``<data dir>/reporting/
    revenue-report.html``); return the path. Never opens the warehouse."""
    snapshot = load_snapshot(settings.data_dir)
    if snapshot is None:
        raise ReportError("finance snapshot", f"none in {settings.data_dir}: run `billhouse close` first")
    path = out or default_report_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(snapshot, months), encoding="utf-8")
    return path
