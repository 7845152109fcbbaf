"""A close whose customers live in 200 timezones (issue 4: every boundary is local
midnight in the customer's zone, whatever the zones).

On ClickHouse each local-time expression takes one branch per customer zone
(macros/calendar/local_time.sql), so with this many zones a model's SQL passed the
engine's 256 KiB query limit and the close failed; the profile raises the limits
(profiles.yml). Half the customers have a per-event charge: the pay-in-advance models
take only those customers' zones, and their periods must still be local midnights.
"""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import close_variables
from billhouse.dbt_runner import run_dbt
from billhouse.events import load_events
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from tests.conftest import naive_utc, query_warehouse

# the close window: October's periods end in it (Nov 1, local midnight) in every zone, and
# so do the per-event fees of the Oct 15 events (the next local midnight)
SINCE = datetime(2026, 10, 14, tzinfo=timezone.utc)
AS_OF = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
# Morocco's clock (Africa/Casablanca, Africa/El_Aaiun) differs between the tz database
# bundled in chDB (2026c: UTC+0 from October 2026) and Python's (docs/billing-clock.md,
# "Which tz database"): the reference below could not judge it.
TZ_DATABASES_DISAGREE = {"Africa/Casablanca", "Africa/El_Aaiun"}
# 200 zones spread over the IANA database, from UTC-11 to UTC+14 (every other
# region/city name; the aliases under US/, Etc/ and the like left out)
ZONES = sorted(
    z for z in zoneinfo.available_timezones()
    if "/" in z and not z.startswith(("Etc/", "SystemV/", "US/", "posix/", "right/")) and z not in TZ_DATABASES_DISAGREE
)[::2][:200]


def _catalog() -> dict:
    calls = {"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.01"}}
    return {
        "billable_metrics": [{"code": "calls", "aggregation_type": "count_agg"}],
        "plans": [
            {"code": "arrears", "interval": "monthly", "amount_cents": 1000, "amount_currency": "EUR",
             "charges": [calls]},
            {"code": "per_event", "interval": "monthly", "amount_cents": 1000, "amount_currency": "EUR",
             "charges": [dict(calls, pay_in_advance=True)]},
        ],
        "customers": [{"external_id": f"cus_{i}", "currency": "EUR", "timezone": zone}
                      for i, zone in enumerate(ZONES)],
        "subscriptions": [
            {"external_id": f"sub_{i}", "external_customer_id": f"cus_{i}",
             "plan_code": "per_event" if i % 2 else "arrears", "billing_time": "calendar",
             "subscription_at": "2026-09-01T00:00:00Z"}
            for i in range(len(ZONES))
        ],
    }


def _events() -> list[dict]:
    # Oct 15 noon UTC is Oct 15 or 16 locally in every zone: inside October's period
    return [{"transaction_id": f"tx_{i}", "external_subscription_id": f"sub_{i}", "code": "calls",
             "timestamp": "2026-10-15T12:00:00Z", "properties": {}} for i in range(len(ZONES))]


def _local_midnight_utc(day: date, zone: str) -> datetime:
    local = datetime(day.year, day.month, day.day, tzinfo=zoneinfo.ZoneInfo(zone))
    return local.astimezone(timezone.utc).replace(tzinfo=None)


# a one-timezone close (a Dagster partition); an odd index: a per-event customer
ONE_ZONE = ZONES[101]


def _closed_store(data_dir: Path, timezone_name: str | None) -> Settings:
    settings = Settings(data_dir=data_dir)
    catalog = parse_catalog(_catalog(), source="tests/test_many_timezones.py")
    with open_warehouse(settings) as warehouse:
        warehouse.replace_catalog(catalog)
        # received a minute after they happened, so their per-event fees close in the window
        load_events(warehouse, _events(), catalog, ingested_at=datetime(2026, 10, 15, 12, 1, tzinfo=timezone.utc))
    run_dbt(settings, ["build", "--selector", "close"], close_variables(AS_OF, SINCE, timezone_name))
    return settings


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _closed_store(Path(tmp_path_factory.mktemp("many-timezones")), None)


@pytest.fixture(scope="module")
def closed_one_zone(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _closed_store(Path(tmp_path_factory.mktemp("many-timezones-one")), ONE_ZONE)


def test_the_zones_are_many_and_spread() -> None:
    assert len(ZONES) == 200
    noon = datetime(2026, 10, 15, 12, tzinfo=timezone.utc)
    offsets = [noon.astimezone(zoneinfo.ZoneInfo(zone)).utcoffset().total_seconds() / 3600 for zone in ZONES]
    assert max(offsets) - min(offsets) >= 20


def test_every_customer_is_invoiced_for_october_from_local_midnight(closed: Settings) -> None:
    drafts = query_warehouse(closed, "select distinct external_customer_id from billhouse.fct_invoice_drafts")
    assert len(drafts) == len(ZONES)
    periods = query_warehouse(closed, "select external_subscription_id, period_start, period_end"
                             " from billhouse.int_billing_periods")
    october = {}
    for row in periods:
        zone = ZONES[int(row["external_subscription_id"].removeprefix("sub_"))]
        if naive_utc(row["period_end"]) == _local_midnight_utc(date(2026, 11, 1), zone):
            october[row["external_subscription_id"]] = (naive_utc(row["period_start"]), zone)
    assert len(october) == len(ZONES)
    wrong = {sub: (start, zone) for sub, (start, zone) in october.items()
             if start != _local_midnight_utc(date(2026, 10, 1), zone)}
    assert not wrong, list(wrong.items())[:5]


def test_per_event_periods_are_local_midnights_of_their_customers(closed: Settings) -> None:
    rows = query_warehouse(closed, "select external_subscription_id, timezone, period_start, period_end"
                          " from billhouse.int_pay_in_advance_periods")
    assert len(rows) == len(ZONES) // 2
    for row in rows:
        assert row["timezone"] == ZONES[int(row["external_subscription_id"].removeprefix("sub_"))]
        assert naive_utc(row["period_start"]) == _local_midnight_utc(date(2026, 10, 1), row["timezone"]), row
        assert naive_utc(row["period_end"]) == _local_midnight_utc(date(2026, 11, 1), row["timezone"]), row
    fees = query_warehouse(closed, "select count(*) as n from billhouse.int_pay_in_advance_charge_fees")
    assert fees[0]["n"] == len(ZONES) // 2
    # the models branched on the per-event customers' zones only (odd indices)
    compiled = closed.dbt_target_dir / "compiled" / "billhouse" / "models" / "rating"
    for model in ("int_pay_in_advance_periods", "int_pay_in_advance_events"):
        sql = (compiled / f"{model}.sql").read_text()
        assert {zone for zone in ZONES if f"= '{zone}', " in sql} == set(ZONES[1::2]), model


def test_a_one_timezone_close_plans_with_its_zone_only(closed_one_zone: Settings) -> None:
    """The clock's models of a one-timezone close branch on that zone (and UTC) only,
    not on the 200 (config meta customer_timezones), and still bill it right."""
    compiled = closed_one_zone.dbt_target_dir / "compiled" / "billhouse" / "models"
    for model in ("metering/int_subscription_periods", "metering/int_billing_periods",
                  "metering/int_late_usage_periods", "rating/int_pay_in_advance_periods",
                  "rating/int_pay_in_advance_events"):
        sql = (compiled / f"{model}.sql").read_text()
        branched = {zone for zone in ZONES if f"= '{zone}', " in sql}
        assert branched <= {ONE_ZONE, "UTC"}, (model, sorted(branched)[:5])
    assert f"= '{ONE_ZONE}', " in (compiled / "metering/int_subscription_periods.sql").read_text()
    subscription = f"sub_{ZONES.index(ONE_ZONE)}"
    periods = query_warehouse(closed_one_zone, "select external_subscription_id, period_start, period_end"
                                      " from billhouse.int_billing_periods")
    assert {row["external_subscription_id"] for row in periods} == {subscription}
    assert [(naive_utc(row["period_start"]), naive_utc(row["period_end"])) for row in periods] == [
        (_local_midnight_utc(date(2026, 10, 1), ONE_ZONE), _local_midnight_utc(date(2026, 11, 1), ONE_ZONE))]
    per_event = query_warehouse(closed_one_zone, "select external_subscription_id, period_start"
                                        " from billhouse.int_pay_in_advance_periods")
    assert [(row["external_subscription_id"], naive_utc(row["period_start"])) for row in per_event] == [
        (subscription, _local_midnight_utc(date(2026, 10, 1), ONE_ZONE))]
