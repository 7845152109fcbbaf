"""Dagster on the real engines: the Definitions load from the store; the close-clock
sensor, evaluated at given instants, adds a customer's new timezone to the dynamic
partitions without a reload, requests the (date, timezone) partition of each local day
that has ended (run key ``<tz>/<D>``), catches up the days a stopped daemon missed,
requests nothing twice and skips its tick while the store is busy; materializing a close
finalizes the expected invoices once, and a late event is billed once, as an adjustment
on the next invoice. One store, one ledger and one Dagster instance for the module; the
sensor tests run in file order (they add a customer)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from dagster import (
    DagsterExecutionStepExecutionError,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    build_sensor_context,
    materialize,
)
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.events import load_events
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.raw_tables import CUSTOMERS
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from ingestion.config import landing_dir
from ingestion.segments import encode_frame, segment_name
from invoicing.ledger import list_invoices
from orchestration.definitions import (
    CLOSE_SENSOR_NAME,
    NO_HELD_INVOICES_CHECK,
    TIMEZONE_PARTITIONS,
    build_definitions,
    close_window,
)

KIRI, UTC, PAGO = "Pacific/Kiritimati", "UTC", "Pacific/Pago_Pago"

CATALOG = {
    "billable_metrics": [{"code": "calls", "aggregation_type": "count_agg"}],
    "plans": [{"code": "starter", "interval": "monthly", "amount_cents": 1000, "amount_currency": "EUR",
               "charges": [{"billable_metric_code": "calls", "charge_model": "standard",
                            "properties": {"amount": "0.5"}}]}],
    "customers": [
        {"external_id": "cus_utc", "currency": "EUR", "timezone": "UTC"},
        {"external_id": "cus_kiri", "currency": "EUR", "timezone": "Pacific/Kiritimati"},
    ],
    "subscriptions": [
        {"external_id": "sub_utc", "external_customer_id": "cus_utc", "plan_code": "starter",
         "subscription_at": "2026-08-01T00:00:00Z"},
        {"external_id": "sub_kiri", "external_customer_id": "cus_kiri", "plan_code": "starter",
         "subscription_at": "2026-08-01T00:00:00+14:00"},
    ],
}


def _call(tx: str, sub: str, ts: str) -> dict:
    return {"transaction_id": tx, "external_subscription_id": sub, "code": "calls", "timestamp": ts,
            "properties": {}}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: _at("2026-11-01T11:10"))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Orchestrated:
    settings: Settings
    clock: Clock
    instance: DagsterInstance
    defs: Definitions
    first_tick: SensorExecutionData | None = None

    def tick(self, now: datetime, cursor: str | None) -> SensorExecutionData:
        """Evaluate the close-clock sensor at ``now``, then apply its dynamic partition
        requests to the instance, as the sensor daemon does."""
        self.clock.now = now
        sensor = self.defs.get_sensor_def(CLOSE_SENSOR_NAME)
        context = build_sensor_context(
            instance=self.instance, instance_ref=self.instance.get_ref(), cursor=cursor, definitions=self.defs
        )
        data = sensor.evaluate_tick(context)
        for request in data.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return data

    def close(self, day: str, tz_name: str):
        return materialize(
            list(self.defs.assets),
            partition_key=MultiPartitionKey({"date": day, "timezone": tz_name}),
            resources=self.defs.resources,
            instance=self.instance,
        )

    def invoices(self, customer: str | None = None):
        with ledger(self.settings) as conn:
            return [i for i in list_invoices(conn) if customer is None or i.external_customer_id == customer]


@pytest.fixture(scope="module")
def orchestrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrated]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("orchestration")))
    load_inputs(settings, parse_catalog(CATALOG), [
        _call("u1", "sub_utc", "2026-08-05T00:00:00Z"),
        _call("u2", "sub_utc", "2026-08-06T00:00:00Z"),
        _call("k1", "sub_kiri", "2026-08-05T00:00:00Z"),
    ])
    clock = Clock()
    try:
        # A persistent (sqlite) instance: the sensor daemon resolves dynamic partitions
        # through an instance ref, which an ephemeral instance does not have.
        with DagsterInstance.local_temp(tempdir=str(tmp_path_factory.mktemp("dagster_home"))) as instance:
            orchestrated = Orchestrated(settings, clock, instance, build_definitions(settings, clock=clock))
            orchestrated.first_tick = orchestrated.tick(_at("2026-11-01T11:10"), cursor=None)
            yield orchestrated
    finally:
        stop_ledger(settings)


def _run_keys(data: SensorExecutionData) -> list[str]:
    return [request.run_key for request in data.run_requests or []]


def _added_timezones(data: SensorExecutionData) -> list[str]:
    return [key for request in data.dynamic_partitions_requests or [] for key in request.partition_keys]


def _cursor(**days: str) -> str:
    names = {"kiri": KIRI, "utc": UTC, "pago": PAGO}
    return json.dumps({names[short]: day for short, day in days.items()})


def test_definitions_load_with_the_close_sensor_over_dynamic_timezone_partitions(orchestrated: Orchestrated) -> None:
    assert [s.name for s in orchestrated.defs.sensors] == [CLOSE_SENSOR_NAME]
    # a close's two steps run in the run's process, not a process each
    assert orchestrated.defs.resolve_job_def("close").executor_def.name == "in_process"
    assert not list(orchestrated.defs.schedules or [])
    keys = {key.to_user_string() for a in orchestrated.defs.assets for key in a.keys}
    assert {"fct_invoice_drafts", "int_billing_periods", "invoices"} <= keys
    [invoices] = [a for a in orchestrated.defs.assets if "invoices" in {k.to_user_string() for k in a.keys}]
    partitions = invoices.partitions_def
    assert isinstance(partitions, MultiPartitionsDefinition)
    dimensions = {d.name: d.partitions_def for d in partitions.partitions_defs}
    assert dimensions["timezone"] == TIMEZONE_PARTITIONS
    assert isinstance(TIMEZONE_PARTITIONS, DynamicPartitionsDefinition)
    assert TIMEZONE_PARTITIONS.name == "customer_timezone"


def test_the_invoice_drafts_data_tests_are_asset_checks_from_any_working_directory(
    orchestrated: Orchestrated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The close selector picks the drafts' tests by path (models/billing); dagster-dbt
    # resolves it from the working directory unless it is given the project.
    monkeypatch.chdir(tmp_path)
    defs = build_definitions(orchestrated.settings, clock=orchestrated.clock)
    checks = {check.key.name for a in defs.assets for check in a.check_specs}
    manifest = json.loads((orchestrated.settings.dbt_target_dir / "manifest.json").read_text())
    drafts_tests = {
        node["name"] for node in manifest["nodes"].values()
        if node["resource_type"] == "test" and node["original_file_path"].startswith("models/billing/")
    }
    assert {"unique_fct_invoice_drafts_invoice_key", "fct_invoice_draft_fees_not_null"} <= drafts_tests
    assert checks == drafts_tests | {NO_HELD_INVOICES_CHECK}


def test_the_first_tick_adds_the_store_timezones_and_closes_the_last_day_ended_in_each(
    orchestrated: Orchestrated,
) -> None:
    # 2026-11-01 11:10 UTC is 2026-11-02 01:10 in Kiritimati (UTC+14): its Nov 1 is over.
    first = orchestrated.first_tick
    assert sorted(_added_timezones(first)) == [KIRI, UTC]
    assert sorted(orchestrated.instance.get_dynamic_partitions("customer_timezone")) == [KIRI, UTC]
    assert sorted(_run_keys(first)) == [f"{KIRI}/2026-11-01", f"{UTC}/2026-10-31"]
    assert json.loads(first.cursor) == {KIRI: "2026-11-01", UTC: "2026-10-31"}
    request = next(r for r in first.run_requests if r.run_key == f"{UTC}/2026-10-31")
    assert request.partition_key == MultiPartitionKey({"date": "2026-10-31", "timezone": UTC})
    assert request.job_name in (None, "close")


@pytest.fixture(scope="module")
def pago_pago_customer_added(orchestrated: Orchestrated) -> SensorExecutionData:
    """A customer in a timezone no customer had is inserted into the running store, then
    the sensor ticks once more (the same Definitions: no reload)."""
    with_pago = {**CATALOG, "customers": [*CATALOG["customers"],
                                          {"external_id": "cus_pago", "currency": "EUR", "timezone": PAGO}]}
    [row] = [r for r in parse_catalog(with_pago).rows()["customers"] if r["external_id"] == "cus_pago"]
    with open_warehouse(orchestrated.settings) as warehouse:
        warehouse.insert_rows(CUSTOMERS, [row])
    return orchestrated.tick(_at("2026-11-01T11:20"), cursor=orchestrated.first_tick.cursor)


def test_a_customer_in_a_new_timezone_gets_its_partitions_and_closes_without_a_reload(
    orchestrated: Orchestrated, pago_pago_customer_added: SensorExecutionData
) -> None:
    tick = pago_pago_customer_added
    assert _added_timezones(tick) == [PAGO]
    assert sorted(orchestrated.instance.get_dynamic_partitions("customer_timezone")) == [KIRI, PAGO, UTC]
    # 11:20 UTC is 00:20 in Pago Pago (UTC-11): its Oct 31 just ended; the others are closed.
    assert _run_keys(tick) == [f"{PAGO}/2026-10-31"]
    assert json.loads(tick.cursor) == {KIRI: "2026-11-01", PAGO: "2026-10-31", UTC: "2026-10-31"}
    # The new timezone's days are partitions of the assets: backfillable from the UI.
    [invoices] = [a for a in orchestrated.defs.assets if "invoices" in {k.to_user_string() for k in a.keys}]
    keys = invoices.partitions_def.get_partition_keys(dynamic_partitions_store=orchestrated.instance)
    assert MultiPartitionKey({"date": "2026-08-31", "timezone": PAGO}) in keys


# One UTC day, three timezones 25 hours apart: each local midnight (+ 5 minutes) closes
# exactly that timezone's day that just ended. Kiritimati's Nov 1 ends at 10:00 UTC,
# UTC's Oct 31 at 00:00, Pago Pago's Oct 31 at 11:00 UTC.
SAME_UTC_DAY = [
    ("2026-11-01T00:04", []),
    ("2026-11-01T00:05", [f"{UTC}/2026-10-31"]),
    ("2026-11-01T09:59", []),
    ("2026-11-01T10:04", []),
    ("2026-11-01T10:05", [f"{KIRI}/2026-11-01"]),
    ("2026-11-01T11:04", []),
    ("2026-11-01T11:05", [f"{PAGO}/2026-10-31"]),
    ("2026-11-01T23:59", []),
    ("2026-11-02T00:05", [f"{UTC}/2026-11-01"]),
]


def test_each_timezone_closes_its_own_day_shortly_after_its_local_midnight(
    orchestrated: Orchestrated, pago_pago_customer_added: SensorExecutionData
) -> None:
    cursor = _cursor(kiri="2026-10-31", utc="2026-10-30", pago="2026-10-30")
    requested: list[str] = []
    for instant, expected in SAME_UTC_DAY:
        tick = orchestrated.tick(_at(instant), cursor)
        assert sorted(_run_keys(tick)) == sorted(expected), instant
        cursor = tick.cursor or cursor
        requested += _run_keys(tick)
    assert len(requested) == len(set(requested)) == 4
    # The same three closes from one tick when the clock is looked at once, at 11:10 UTC.
    tick = orchestrated.tick(_at("2026-11-01T11:10"), _cursor(kiri="2026-10-31", utc="2026-10-30", pago="2026-10-30"))
    by_key = {r.run_key: r for r in tick.run_requests}
    assert sorted(by_key) == [f"{KIRI}/2026-11-01", f"{PAGO}/2026-10-31", f"{UTC}/2026-10-31"]
    assert by_key[f"{PAGO}/2026-10-31"].partition_key == MultiPartitionKey({"date": "2026-10-31", "timezone": PAGO})
    assert by_key[f"{KIRI}/2026-11-01"].tags["billhouse/billing_date"] == "2026-11-01"


def test_a_missed_tick_skips_no_day_and_nothing_is_requested_twice(
    orchestrated: Orchestrated, pago_pago_customer_added: SensorExecutionData
) -> None:
    # The daemon was down from Oct 28 to Nov 1 11:10 UTC: every day that ended meanwhile,
    # in each timezone, oldest first.
    tick = orchestrated.tick(_at("2026-11-01T11:10"), _cursor(kiri="2026-10-28", utc="2026-10-28", pago="2026-10-28"))
    assert _run_keys(tick) == [
        f"{KIRI}/2026-10-29", f"{KIRI}/2026-10-30", f"{KIRI}/2026-10-31", f"{KIRI}/2026-11-01",
        f"{PAGO}/2026-10-29", f"{PAGO}/2026-10-30", f"{PAGO}/2026-10-31",
        f"{UTC}/2026-10-29", f"{UTC}/2026-10-30", f"{UTC}/2026-10-31",
    ]
    # The cursor remembers them: the next ticks request nothing again.
    for instant in ("2026-11-01T11:10", "2026-11-01T11:15", "2026-11-01T23:59"):
        again = orchestrated.tick(_at(instant), tick.cursor)
        assert _run_keys(again) == []
        assert again.skip_message and "no day has ended" in again.skip_message
    # A cursor ahead of the clock (a day already requested) requests nothing either.
    assert _run_keys(orchestrated.tick(_at("2026-11-01T11:10"), _cursor(kiri="2026-11-01", utc="2026-11-01",
                                                                        pago="2026-11-01"))) == []


def test_a_timezone_left_without_customers_keeps_its_partitions(
    orchestrated: Orchestrated, pago_pago_customer_added: SensorExecutionData
) -> None:
    with open_warehouse(orchestrated.settings) as warehouse:
        warehouse.replace_catalog(parse_catalog(CATALOG))  # cus_pago is gone
    tick = orchestrated.tick(_at("2026-11-02T11:10"), pago_pago_customer_added.cursor)
    assert sorted(_run_keys(tick)) == [f"{KIRI}/2026-11-02", f"{UTC}/2026-11-01"]  # no Pago Pago close
    assert json.loads(tick.cursor)[PAGO] == "2026-10-31"  # remembered, should it come back
    assert PAGO in orchestrated.instance.get_dynamic_partitions("customer_timezone")
    assert not tick.dynamic_partitions_requests


def test_the_sensor_skips_its_tick_while_a_run_holds_the_store(orchestrated: Orchestrated) -> None:
    cursor = _cursor(kiri="2026-10-28", utc="2026-10-28")
    run = DagsterRun(job_name="close", run_id=make_new_run_id(), status=DagsterRunStatus.STARTED)
    orchestrated.instance.add_run(run)
    try:
        tick = orchestrated.tick(_at("2026-11-01T11:10"), cursor)
    finally:
        orchestrated.instance.delete_run(run.run_id)
    assert _run_keys(tick) == []
    assert "store busy" in tick.skip_message and run.run_id in tick.skip_message
    assert tick.cursor in (None, cursor)  # nothing advanced: the next tick catches up


HOLD_WITH_BILLHOUSE = (
    "from billhouse.warehouse import open_warehouse\n"
    "with open_warehouse(Settings(data_dir=Path({data_dir!r}))):\n"
    "    print('holding', flush=True); sys.stdin.read()"
)
# a process outside billhouse's store lock (say, a dbt run by hand): only chDB refuses
HOLD_WITH_CHDB_ONLY = (
    "import clickhouse_connect\n"
    "client = clickhouse_connect.get_client(interface='chdb', path=str(Path({data_dir!r}) / 'chdb'))\n"
    "client.command('select 1'); print('holding', flush=True); sys.stdin.read(); client.close()"
)


@pytest.mark.parametrize(
    ("holding_code", "reason"),
    [(HOLD_WITH_BILLHOUSE, "store busy: the store is in use by another billhouse step"),
     (HOLD_WITH_CHDB_ONLY, "store busy: another process owns")],
)
def test_the_sensor_skips_its_tick_while_another_process_owns_the_store(
    orchestrated: Orchestrated, holding_code: str, reason: str
) -> None:
    data_dir = str(orchestrated.settings.data_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from billhouse.settings import Settings\n"
         + holding_code.format(data_dir=data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        tick = orchestrated.tick(_at("2026-11-01T11:10"), _cursor(kiri="2026-10-28", utc="2026-10-28"))
    finally:
        holder.communicate("", timeout=60)
    assert _run_keys(tick) == []
    assert reason in tick.skip_message
    # Once the store is free again, the next tick closes what came due meanwhile.
    after = orchestrated.tick(_at("2026-11-01T11:15"), _cursor(kiri="2026-10-31", utc="2026-10-31"))
    assert _run_keys(after) == [f"{KIRI}/2026-11-01"]


def test_close_window_is_the_local_day_between_its_midnights() -> None:
    since, as_of = close_window(date(2026, 10, 31), "Pacific/Kiritimati")
    assert as_of == datetime(2026, 10, 31, 10, tzinfo=timezone.utc)
    assert since == datetime(2026, 10, 30, 10, tzinfo=timezone.utc)
    # 2026-03-29 is 23 hours long in Paris, 2026-10-25 25 hours
    since, as_of = close_window(date(2026, 3, 29), "Europe/Paris")
    assert (as_of - since).total_seconds() == 23 * 3600
    since, as_of = close_window(date(2026, 10, 25), "Europe/Paris")
    assert (as_of - since).total_seconds() == 25 * 3600


def test_materializing_a_close_invoices_once(orchestrated: Orchestrated) -> None:
    # 1. The UTC close of August 31 (invoices dated Sep 1), a partition of the timezone the
    # sensor added: only the UTC customer's August invoice (Kiritimati closes its August
    # at its own midnight, another partition).
    assert "UTC" in orchestrated.instance.get_dynamic_partitions("customer_timezone")
    result = orchestrated.close("2026-08-31", "UTC")
    assert result.success
    # no draft held (a fee out of range would fail this check, as a warning)
    held_check = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}[NO_HELD_INVOICES_CHECK]
    assert held_check is True
    [august] = orchestrated.invoices()
    assert august.external_customer_id == "cus_utc"
    assert august.issuing_date == date(2026, 9, 1)
    assert august.total_cents == 1000 + 100  # 2 calls x 0.5 EUR
    # 2. Re-running it changes nothing.
    assert orchestrated.close("2026-08-31", "UTC").success
    assert [i.number for i in orchestrated.invoices()] == [august.number]
    # 3. Kiritimati's own close of its August 31.
    assert orchestrated.close("2026-08-31", "Pacific/Kiritimati").success
    [kiri] = orchestrated.invoices("cus_kiri")
    assert (kiri.issuing_date, kiri.total_cents) == (date(2026, 9, 1), 1000 + 50)


def test_a_late_event_is_billed_once_as_an_adjustment_on_the_next_invoice(orchestrated: Orchestrated) -> None:
    [august] = orchestrated.invoices("cus_utc")
    # A late August event arrives after August was invoiced ...
    with open_warehouse(orchestrated.settings) as warehouse:
        load_events(warehouse, [_call("u-late", "sub_utc", "2026-08-20T00:00:00Z")], parse_catalog(CATALOG))
    # ... and is billed on the next invoice (Oct 1) as an adjustment for August, once.
    assert orchestrated.close("2026-09-30", "UTC").success
    assert orchestrated.close("2026-09-30", "UTC").success
    assert orchestrated.close("2026-10-31", "UTC").success
    utc = sorted(orchestrated.invoices("cus_utc"), key=lambda i: i.issuing_date)
    assert [i.issuing_date for i in utc] == [date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1)]
    adjustments = [(i.issuing_date, f) for i in utc for f in i.fees if f.kind == "adjustment"]
    assert len(adjustments) == 1
    issued, fee = adjustments[0]
    assert issued == date(2026, 10, 1)
    assert (fee.units, fee.amount_cents) == (1, 50)
    assert fee.period_start == datetime(2026, 8, 1, tzinfo=timezone.utc)
    assert utc[0].total_cents == 1100  # August's invoice never changes
    assert utc[1].total_cents == 1000 + 0 + 50
    assert utc[2].total_cents == 1000


def test_a_close_loads_the_events_the_api_landed_since_the_last_one(orchestrated: Orchestrated) -> None:
    # An event the API accepted (a landing frame, not yet in the store) is billed by the
    # next Dagster close of its period, once: Kiritimati's September close.
    september = int(datetime(2026, 9, 10, tzinfo=timezone.utc).timestamp() * 1000)
    landing = landing_dir(orchestrated.settings)
    landing.mkdir(parents=True, exist_ok=True)
    ingested_at_us = int(datetime.now(timezone.utc).timestamp() * 1_000_000)
    (landing / segment_name(ingested_at_us)).write_bytes(
        encode_frame([("k-landed", "sub_kiri", "calls", september, "{}")], ingested_at_us)
    )
    assert orchestrated.close("2026-09-30", "Pacific/Kiritimati").success
    assert orchestrated.close("2026-09-30", "Pacific/Kiritimati").success
    [september_invoice] = [i for i in orchestrated.invoices("cus_kiri") if i.issuing_date == date(2026, 10, 1)]
    assert september_invoice.total_cents == 1000 + 50  # the landed call, billed once
    with open_warehouse(orchestrated.settings) as warehouse:
        [stored] = warehouse.query("select count() as n from billhouse_raw.events where transaction_id = 'k-landed'")
    assert stored["n"] == 1


def test_the_closes_reuse_dbt_parse_between_the_billing_build_and_the_finance_refresh(
    orchestrated: Orchestrated,
) -> None:
    # Each close runs dbt twice (dagster-dbt's billing build, then run_dbt's finance
    # refresh); dbt keeps its parsed project only while the command line's profile and
    # target are the same, so a difference would re-parse the project twice per close.
    dbt_dir = orchestrated.settings.data_dir / "dbt"
    logs = "".join(path.read_text() for path in dbt_dir.rglob("dbt.log"))
    assert logs.count("Running with dbt=") >= 8  # the parse at load, then two per close
    assert "config vars, config profile, or config target have changed" not in logs


def test_a_day_that_has_not_ended_cannot_be_closed(orchestrated: Orchestrated) -> None:
    from orchestration.definitions import DayNotOverError

    tomorrow = (datetime.now(timezone.utc).date()).isoformat()
    with pytest.raises((DayNotOverError, DagsterExecutionStepExecutionError)):
        orchestrated.close(tomorrow, "UTC")


def test_the_instance_settings_launch_one_run_at_a_time(tmp_path: Path) -> None:
    # chDB admits one process per store: `make ui` installs orchestration/dagster.yaml,
    # whose run queue never lets two closes (or backfill runs) overlap.
    (tmp_path / "dagster.yaml").write_text((Path(__file__).parents[1] / "orchestration" / "dagster.yaml").read_text())
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
