"""The pricing catalog, customers and subscriptions, authored as YAML in Lago's names.

``load_catalog(path)`` reads and validates a document; every error names the file, the
plan / charge / metric and the field. ``Catalog.rows()`` gives the rows of the raw
tables (see ``raw_tables``) that the dbt models read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from billhouse.charge_properties import Price, parse_price
from billhouse.custom_expression import CustomExpressionError, compile_custom_expression
from billhouse.errors import CatalogError
from billhouse.property_numbers import NUMERIC_TEXT_PATTERN, PROPERTY_DECIMAL_PLACES, PROPERTY_INTEGER_DIGITS
from billhouse.raw_tables import clickhouse_decimal_of_raw_json

AGGREGATION_TYPES = (
    "count_agg",
    "sum_agg",
    "max_agg",
    "unique_count_agg",
    "latest_agg",
    "weighted_sum_agg",
    "custom_agg",
)
CHARGE_MODELS = ("standard", "graduated", "volume", "package", "percentage", "graduated_percentage")
ROUNDING_FUNCTIONS = ("round", "ceil", "floor")
# Aggregations whose value carries over between periods when `recurring: true`.
RECURRING_AGGREGATIONS = ("sum_agg", "unique_count_agg", "weighted_sum_agg", "custom_agg")
INTERVALS = ("weekly", "monthly", "quarterly", "semiannual", "yearly")
SUPPORTED_INTERVALS = INTERVALS  # the billing clock (issue 4) bills them all
BILLING_TIMES = ("calendar", "anniversary")


@dataclass(frozen=True)
class BillableMetric:
    code: str
    name: str
    aggregation_type: str
    field_name: str | None = None
    recurring: bool = False
    expression: str | None = None
    rounding_function: str | None = None
    rounding_precision: int | None = None
    expression_clickhouse: str | None = None  # the validated expression, per warehouse
    expression_postgres: str | None = None


@dataclass(frozen=True)
class ChargeFilter:
    """Events whose properties match ``values`` (key -> accepted values) are priced by
    ``price``; an event belongs to the first filter all of whose keys match."""

    filter_index: int
    invoice_display_name: str
    values: dict[str, tuple[str, ...]]
    price: Price


@dataclass(frozen=True)
class Charge:
    charge_id: str
    plan_code: str
    charge_index: int
    billable_metric_code: str
    charge_model: str
    invoice_display_name: str
    pay_in_advance: bool
    prorated: bool
    min_amount_cents: int
    price: Price  # the default properties: events matching no filter
    filters: tuple[ChargeFilter, ...]
    grouped_by: tuple[str, ...]
    properties: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    interval: str
    amount_cents: int
    amount_currency: str
    pay_in_advance: bool
    trial_period: int
    bill_charges_monthly: bool
    minimum_commitment_cents: int | None
    charges: tuple[Charge, ...]


@dataclass(frozen=True)
class Customer:
    external_id: str
    name: str
    currency: str
    timezone: str


@dataclass(frozen=True)
class Subscription:
    external_id: str
    external_customer_id: str
    plan_code: str
    billing_time: str
    subscription_at: datetime
    ending_at: datetime | None
    terminated_at: datetime | None
    # Billing clock: an upgrade/downgrade is a new subscription naming the one it replaces;
    # the old one then ends the day before the new one starts (semantics.md).
    previous_subscription_id: str | None = None


@dataclass(frozen=True)
class Catalog:
    billable_metrics: tuple[BillableMetric, ...] = ()
    plans: tuple[Plan, ...] = ()
    customers: tuple[Customer, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    organization: dict[str, Any] = field(default_factory=dict)

    def metric(self, code: str) -> BillableMetric | None:
        return next((m for m in self.billable_metrics if m.code == code), None)

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """Rows per raw table name."""
        charges = [c for p in self.plans for c in p.charges]
        return {
            "billable_metrics": [vars(m).copy() for m in self.billable_metrics],
            "plans": [
                {k: v for k, v in vars(p).items() if k != "charges"} for p in self.plans
            ],
            "charges": [_charge_row(c) for c in charges],
            "charge_prices": [row for c in charges for row in _price_rows(c)],
            "charge_filter_values": [
                {"charge_id": c.charge_id, "filter_index": f.filter_index, "property_key": key, "value": value}
                for c in charges
                for f in c.filters
                for key, values in f.values.items()
                for value in values
            ],
            "charge_ranges": [row for c in charges for row in _range_rows(c)],
            "customers": [vars(c).copy() for c in self.customers],
            "subscriptions": [vars(s).copy() for s in self.subscriptions],
        }


DEFAULT_FILTER_INDEX = -1  # the charge's default properties (events matching no filter)


def _charge_row(charge: Charge) -> dict[str, Any]:
    return {
        "charge_id": charge.charge_id,
        "plan_code": charge.plan_code,
        "charge_index": charge.charge_index,
        "billable_metric_code": charge.billable_metric_code,
        "charge_model": charge.charge_model,
        "invoice_display_name": charge.invoice_display_name,
        "pay_in_advance": charge.pay_in_advance,
        "prorated": charge.prorated,
        "min_amount_cents": charge.min_amount_cents,
        "grouped_by": json.dumps(list(charge.grouped_by)),
        "filter_count": len(charge.filters),
        "properties": json.dumps(charge.properties, sort_keys=True, default=str),
    }


def _variants(charge: Charge) -> list[tuple[int, str, Price]]:
    default = (DEFAULT_FILTER_INDEX, charge.invoice_display_name, charge.price)
    return [default] + [(f.filter_index, f.invoice_display_name, f.price) for f in charge.filters]


def _price_rows(charge: Charge) -> list[dict[str, Any]]:
    rows = []
    for index, name, price in _variants(charge):
        row = {k: v for k, v in vars(price).items() if k != "ranges"}
        rows.append({"charge_id": charge.charge_id, "filter_index": index, "invoice_display_name": name, **row})
    return rows


def _range_rows(charge: Charge) -> list[dict[str, Any]]:
    return [
        {"charge_id": charge.charge_id, "filter_index": index, **vars(r)}
        for index, _, price in _variants(charge)
        for r in price.ranges
    ]


# --- reading -------------------------------------------------------------------------


def load_catalog(path: str | Path) -> Catalog:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CatalogError(str(path), "(document)", f"not valid YAML: {exc}") from exc
    return parse_catalog(document or {}, source=str(path))


def parse_catalog(document: dict[str, Any], source: str = "<catalog>") -> Catalog:
    if not isinstance(document, dict):
        raise CatalogError(source, "(document)", "must be a mapping")
    reader = _Reader(source)
    metrics = tuple(
        reader.metric(i, m) for i, m in enumerate(reader.list(document, "billable_metrics", source))
    )
    reader.unique([m.code for m in metrics], "billable_metrics", "code")
    metric_names = {m.code: m.name for m in metrics}
    plans = tuple(
        reader.plan(i, p, metric_names) for i, p in enumerate(reader.list(document, "plans", source))
    )
    reader.unique([p.code for p in plans], "plans", "code")
    customers = tuple(
        reader.customer(i, c) for i, c in enumerate(reader.list(document, "customers", source))
    )
    reader.unique([c.external_id for c in customers], "customers", "external_id")
    plan_by_code = {p.code: p for p in plans}
    customer_by_id = {c.external_id: c for c in customers}
    subscriptions = tuple(
        reader.subscription(i, s, plan_by_code, customer_by_id)
        for i, s in enumerate(reader.list(document, "subscriptions", source))
    )
    reader.unique([s.external_id for s in subscriptions], "subscriptions", "external_id")
    reader.plan_changes(subscriptions)
    organization = document.get("organization") or {}
    return Catalog(metrics, plans, customers, subscriptions, organization)


class _Reader:
    """Field readers that raise CatalogError naming the file and the object."""

    def __init__(self, source: str) -> None:
        self.source = source

    def where(self, *parts: str) -> str:
        return " ".join((self.source,) + parts)

    def list(self, document: dict[str, Any], key: str, where: str) -> list[Any]:
        value = document.get(key) or []
        if not isinstance(value, list):
            raise CatalogError(self.where(), key, "must be a list")
        return value

    def unique(self, values: list[str], section: str, key: str) -> None:
        seen: set[str] = set()
        for v in values:
            if v in seen:
                raise CatalogError(self.where(f"{section} '{v}'"), key, "is defined twice")
            seen.add(v)

    @staticmethod
    def text(obj: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
        value = obj.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise CatalogError(where, key, "is required and must be a non-empty string")
        return value

    @staticmethod
    def optional_text(obj: dict[str, Any], key: str, where: str) -> str | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise CatalogError(where, key, f"must be a string, got {value!r}")
        return value

    @staticmethod
    def choice(obj: dict[str, Any], key: str, where: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value = obj.get(key, default)
        if value not in allowed:
            raise CatalogError(where, key, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    @staticmethod
    def boolean(obj: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
        value = obj.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise CatalogError(where, key, f"must be true or false, got {value!r}")
        return value

    @staticmethod
    def integer(obj: dict[str, Any], key: str, where: str, default: int | None = None, minimum: int = 0) -> int:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CatalogError(where, key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise CatalogError(where, key, f"must be ≥ {minimum}, got {value}")
        return value

    @staticmethod
    def instant(obj: dict[str, Any], key: str, where: str, required: bool = True) -> datetime | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise CatalogError(where, key, "is required (ISO 8601 with an offset)")
            return None
        try:
            return parse_instant(value)
        except ValueError as exc:
            raise CatalogError(where, key, str(exc)) from exc

    def metric(self, index: int, m: Any) -> BillableMetric:
        where = self.where(f"billable_metrics[{index}]")
        if not isinstance(m, dict):
            raise CatalogError(where, "(item)", "must be a mapping")
        code = self.text(m, "code", where)
        where = self.where(f"billable_metric '{code}'")
        aggregation = self.choice(m, "aggregation_type", where, AGGREGATION_TYPES)
        field_name = self.optional_text(m, "field_name", where)
        if aggregation not in ("count_agg", "custom_agg") and not field_name:
            raise CatalogError(where, "field_name", f"is required for {aggregation}")
        recurring = self.boolean(m, "recurring", where)
        if recurring and aggregation not in RECURRING_AGGREGATIONS:
            raise CatalogError(
                where, "recurring", f"{aggregation} cannot be recurring (only {', '.join(RECURRING_AGGREGATIONS)})"
            )
        rounding = m.get("rounding_function")
        if rounding is not None and rounding not in ROUNDING_FUNCTIONS:
            raise CatalogError(where, "rounding_function", f"must be one of {', '.join(ROUNDING_FUNCTIONS)}; got {rounding!r}")
        precision = m.get("rounding_precision")
        if precision is not None and (isinstance(precision, bool) or not isinstance(precision, int) or not -12 <= precision <= 12):
            raise CatalogError(where, "rounding_precision", f"must be an integer from -12 to 12, got {precision!r}")
        expression = self.optional_text(m, "expression", where)
        compiled: dict[str, str | None] = {"clickhouse": None, "postgres": None}
        if aggregation == "custom_agg":
            if not expression:
                raise CatalogError(where, "expression", "is required for custom_agg")
            for dialect in compiled:
                try:
                    compiled[dialect] = compile_custom_expression(
                        code, expression, dialect,
                        property_sql=PROPERTY_DECIMAL_SQL[dialect],
                        property_text_sql=PROPERTY_TEXT_SQL[dialect],
                        timestamp_sql="event_at",
                    )
                except CustomExpressionError as exc:
                    raise CatalogError(where, "expression", str(exc)) from exc
        return BillableMetric(
            code=code,
            name=m.get("name") or code,
            aggregation_type=aggregation,
            field_name=field_name,
            recurring=recurring,
            expression=expression,
            rounding_function=rounding,
            rounding_precision=(precision if precision is not None else (0 if rounding else None)),
            expression_clickhouse=compiled["clickhouse"],
            expression_postgres=compiled["postgres"],
        )

    def plan(self, index: int, p: Any, metric_names: dict[str, str]) -> Plan:
        where = self.where(f"plans[{index}]")
        if not isinstance(p, dict):
            raise CatalogError(where, "(item)", "must be a mapping")
        code = self.text(p, "code", where)
        where = self.where(f"plan '{code}'")
        interval = self.choice(p, "interval", where, INTERVALS)
        if interval not in SUPPORTED_INTERVALS:
            raise CatalogError(where, "interval", f"{interval} is not supported yet")
        currency = self.text(p, "amount_currency", where)
        commitment = p.get("minimum_commitment")
        charges = tuple(
            self.charge(code, i, c, metric_names)
            for i, c in enumerate(self.list(p, "charges", where))
        )
        return Plan(
            code=code,
            name=p.get("name") or code,
            interval=interval,
            amount_cents=self.integer(p, "amount_cents", where),
            amount_currency=currency.upper(),
            pay_in_advance=self.boolean(p, "pay_in_advance", where),
            trial_period=self.integer(p, "trial_period", where, default=0),
            bill_charges_monthly=self.boolean(p, "bill_charges_monthly", where),
            minimum_commitment_cents=(
                self.integer(commitment, "amount_cents", where + " minimum_commitment")
                if isinstance(commitment, dict)
                else None
            ),
            charges=charges,
        )

    def charge(self, plan_code: str, index: int, c: Any, metric_names: dict[str, str]) -> Charge:
        where = self.where(f"plan '{plan_code}' charges[{index}]")
        if not isinstance(c, dict):
            raise CatalogError(where, "(item)", "must be a mapping")
        metric_code = self.text(c, "billable_metric_code", where)
        where = self.where(f"plan '{plan_code}' charge[{index}] '{metric_code}'")
        if metric_code not in metric_names:
            raise CatalogError(where, "billable_metric_code", f"no billable metric has code {metric_code!r}")
        model = self.choice(c, "charge_model", where, CHARGE_MODELS)
        properties = c.get("properties") or {}
        if not isinstance(properties, dict):
            raise CatalogError(where, "properties", "must be a mapping")
        grouped_by = c.get("grouped_by", properties.get("grouped_by")) or []
        if not isinstance(grouped_by, list) or not all(isinstance(k, str) and k for k in grouped_by):
            raise CatalogError(where, "grouped_by", "must be a list of property keys")
        raw_filters = c.get("filters") or []
        if not isinstance(raw_filters, list):
            raise CatalogError(where, "filters", "must be a list")
        # as in Lago, a charge without a display name shows its metric's name
        display_name = c.get("invoice_display_name") or metric_names[metric_code]
        pay_in_advance = self.boolean(c, "pay_in_advance", where)
        min_amount_cents = self.integer(c, "min_amount_cents", where, default=0)
        if pay_in_advance and min_amount_cents:
            # per-event fees bill the period's peak, the true-up its final total: a
            # period whose usage fell would pay the difference twice (Lago refuses it too)
            raise CatalogError(where, "min_amount_cents", "is not allowed on a pay_in_advance charge")
        return Charge(
            charge_id=f"{plan_code}/{index}",
            plan_code=plan_code,
            charge_index=index,
            billable_metric_code=metric_code,
            charge_model=model,
            invoice_display_name=display_name,
            pay_in_advance=pay_in_advance,
            prorated=self.boolean(c, "prorated", where),
            min_amount_cents=min_amount_cents,
            price=parse_price(model, properties, where),
            filters=tuple(
                self.charge_filter(f"{where} filters[{i}]", i, f, model, display_name)
                for i, f in enumerate(raw_filters)
            ),
            grouped_by=tuple(grouped_by),
            properties=properties,
        )

    def charge_filter(self, where: str, index: int, f: Any, model: str, charge_name: str) -> ChargeFilter:
        if not isinstance(f, dict):
            raise CatalogError(where, "(filter)", "must be a mapping")
        values = f.get("values")
        if not isinstance(values, dict) or not values:
            raise CatalogError(where, "values", "is required: a map of property key to accepted values")
        accepted: dict[str, tuple[str, ...]] = {}
        for key, options in values.items():
            if not isinstance(options, list) or not options:
                raise CatalogError(where, f"values.{key}", "must be a non-empty list of accepted values")
            accepted[str(key)] = tuple(str(v) for v in options)
        properties = f.get("properties") or {}
        if not isinstance(properties, dict):
            raise CatalogError(where, "properties", "must be a mapping")
        label = ", ".join(f"{k}: {'/'.join(v)}" for k, v in accepted.items())
        return ChargeFilter(
            filter_index=index,
            invoice_display_name=f.get("invoice_display_name") or f"{charge_name} ({label})",
            values=accepted,
            price=parse_price(model, properties, where),
        )

    def customer(self, index: int, c: Any) -> Customer:
        where = self.where(f"customers[{index}]")
        if not isinstance(c, dict):
            raise CatalogError(where, "(item)", "must be a mapping")
        external_id = self.text(c, "external_id", where)
        where = self.where(f"customer '{external_id}'")
        tz = c.get("timezone") or "UTC"
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CatalogError(where, "timezone", f"unknown IANA timezone {tz!r}") from exc
        currency = self.text(c, "currency", where).upper()
        if len(currency) != 3 or not currency.isalpha():
            raise CatalogError(where, "currency", f"must be an ISO 4217 code, got {currency!r}")
        return Customer(external_id, c.get("name") or external_id, currency, tz)

    def subscription(
        self, index: int, s: Any, plans: dict[str, Plan], customers: dict[str, Customer]
    ) -> Subscription:
        where = self.where(f"subscriptions[{index}]")
        if not isinstance(s, dict):
            raise CatalogError(where, "(item)", "must be a mapping")
        external_id = self.text(s, "external_id", where)
        where = self.where(f"subscription '{external_id}'")
        customer_id = self.text(s, "external_customer_id", where)
        if customer_id not in customers:
            raise CatalogError(where, "external_customer_id", f"no customer has external_id {customer_id!r}")
        plan_code = self.text(s, "plan_code", where)
        if plan_code not in plans:
            raise CatalogError(where, "plan_code", f"no plan has code {plan_code!r}")
        plan, customer = plans[plan_code], customers[customer_id]
        if plan.amount_currency != customer.currency:
            raise CatalogError(
                where,
                "plan_code",
                f"plan {plan_code!r} is in {plan.amount_currency} but customer {customer_id!r} "
                f"is billed in {customer.currency} (no FX)",
            )
        started = self.instant(s, "subscription_at", where)
        assert started is not None
        return Subscription(
            external_id=external_id,
            external_customer_id=customer_id,
            plan_code=plan_code,
            billing_time=self.choice(s, "billing_time", where, BILLING_TIMES, default="calendar"),
            subscription_at=started,
            ending_at=self.instant(s, "ending_at", where, required=False),
            terminated_at=self.instant(s, "terminated_at", where, required=False),
            previous_subscription_id=self.optional_text(s, "previous_subscription_id", where),
        )

    def plan_changes(self, subscriptions: tuple[Subscription, ...]) -> None:
        """Billing clock: a plan change names an earlier subscription of the same customer."""
        by_id = {s.external_id: s for s in subscriptions}
        replaced: set[str] = set()
        for s in subscriptions:
            if s.previous_subscription_id is None:
                continue
            where = self.where(f"subscription '{s.external_id}'")
            previous = by_id.get(s.previous_subscription_id)
            if previous is None:
                raise CatalogError(
                    where, "previous_subscription_id", f"no subscription has external_id {s.previous_subscription_id!r}"
                )
            if previous.external_customer_id != s.external_customer_id:
                raise CatalogError(where, "previous_subscription_id", "belongs to another customer")
            if previous.subscription_at >= s.subscription_at:
                raise CatalogError(where, "previous_subscription_id", "must have started before this subscription")
            if previous.external_id in replaced:
                raise CatalogError(where, "previous_subscription_id", "is already replaced by another subscription")
            replaced.add(previous.external_id)


# How the validated custom_agg expressions read an event property, per warehouse: the
# same rules as the `property_decimal` and `property_text` macros (JSON numbers and
# numeric strings, exact; strings unquoted, numbers as written).
PROPERTY_DECIMAL_SQL = {
    "clickhouse": lambda key: clickhouse_decimal_of_raw_json(f"JSONExtractRaw(properties, '{key}')"),
    "postgres": lambda key: (
        f"(case when jsonb_typeof(properties::jsonb -> '{key}') in ('number', 'string') "
        f"and (properties::jsonb ->> '{key}') ~ '{NUMERIC_TEXT_PATTERN}' "
        f"then case when abs(cast(properties::jsonb ->> '{key}' as numeric)) < 1e{PROPERTY_INTEGER_DIGITS} "
        f"then cast(trunc(cast(properties::jsonb ->> '{key}' as numeric), {PROPERTY_DECIMAL_PLACES})"
        f" as numeric(38, {PROPERTY_DECIMAL_PLACES})) end end)"
    ),
}
PROPERTY_TEXT_SQL = {
    "clickhouse": lambda key: (
        f"if(JSONType(properties, '{key}') = 'String', "
        f"JSONExtractString(properties, '{key}'), JSONExtractRaw(properties, '{key}'))"
    ),
    "postgres": lambda key: f"(properties::jsonb ->> '{key}')",
}


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 string with an offset (or ``Z``), or Unix seconds, as a UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(0, timezone.utc) + _seconds(Decimal(value))
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"Unix seconds {value} are out of range") from exc
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 instant: {value!r}") from exc
    else:
        raise ValueError(f"not an instant: {value!r}")
    if moment.tzinfo is None:
        raise ValueError(f"instant {value!r} has no UTC offset; write Z or +hh:mm")
    return moment.astimezone(timezone.utc)


def _seconds(seconds: Decimal):
    from datetime import timedelta

    whole = int(seconds)
    micros = int((seconds - whole) * 1_000_000)
    return timedelta(seconds=whole, microseconds=micros)
