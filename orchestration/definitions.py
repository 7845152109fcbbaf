"""Dagster definitions: the billing close as assets, partitions and per-timezone schedules.

The dbt billing models are assets (dagster-dbt, over the manifest, chdb target, the
project's `close` selector — every billing model, with the invoice drafts' data tests as
asset checks; the other tests run in CI; the finance marts are refreshed by the invoices
step after finalization, as in the CLI close); the invoices
(finalize into the ledger, PDFs, billed-fee mirror) are one asset downstream of
``fct_invoice_drafts``. Both are partitioned by (billing day, customer timezone): the
partition (D, tz) closes the local day D of tz for the customers of tz — everything that
ends in (midnight starting D, midnight ending D]; its invoices are dated D + 1. One
schedule per timezone present in the customers table fires at 00:05 local time and
requests the day that just ended, with run key ``<tz>/<D>``; re-running or backfilling a
partition issues nothing twice (the ledger is idempotent by invoice key). Partitions
exist up to the current UTC day (end_offset=1, for timezones ahead of UTC); closing a
day that has not ended in its timezone is refused.

chDB admits one process per store: the assets open the warehouse only around dbt (which
runs as a subprocess), never while it runs.
"""



import json
import os
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DailyPartitionsDefinition,
    Definitions,
    MaterializeResult,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    StaticPartitionsDefinition,
    asset,
    definitions,
    define_asset_job,
    schedule,
)
from dagster_dbt import DbtCliResource, dbt_assets

from billhouse.close import close_variables, finish_close
from billhouse.errors import BillhouseError
from billhouse.dbt_runner import close_settings_environment, dbt_env, dbt_executable, run_dbt
from billhouse.settings import PROJECT_DIR, Settings
from billhouse.warehouse import open_warehouse

PARTITIONS_START = "2024-01-01"
SCHEDULE_MINUTE_AFTER_MIDNIGHT = 5


class DayNotOverError(BillhouseError):
    def __init__(self, day: date, tz_name: str) -> None:
        super().__init__(f"billing day {day} has not ended yet in {tz_name}; it cannot be closed")


def close_window(day: date, tz_name: str) -> tuple[datetime, datetime]:
    """(since, as_of) in UTC of the close of billing day ``day`` in ``tz_name``: its
    local midnights (23 or 25 hours apart across a DST switch)."""
    zone = ZoneInfo(tz_name)
    since = datetime.combine(day, time(0), zone).astimezone(timezone.utc)
    as_of = datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(timezone.utc)
    return since, as_of


def checked_close_window(day: date, tz_name: str) -> tuple[datetime, datetime]:
    since, as_of = close_window(day, tz_name)
    if as_of > datetime.now(timezone.utc):
        raise DayNotOverError(day, tz_name)
    return since, as_of


def customer_timezones(settings: Settings) -> list[str]:
    """The customers' timezones in the store (UTC when there is none yet)."""
    with open_warehouse(settings) as warehouse:
        rows = warehouse.query("select distinct timezone from billhouse_raw.customers order by timezone")
    return [row["timezone"] for row in rows] or ["UTC"]


def partition_of(context: AssetExecutionContext) -> tuple[date, str]:
    key = context.partition_key
    dims = key.keys_by_dimension if isinstance(key, MultiPartitionKey) else dict(
        part.split("=", 1) for part in str(key).split("|")
    )
    return date.fromisoformat(dims["date"]), dims["timezone"]


def schedule_name(tz_name: str) -> str:
    return "close_" + "".join(c if c.isalnum() else "_" for c in tz_name)


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings.from_env()
    for name, value in dbt_env(settings).items():  # the dbt subprocess finds the store
        if name.startswith(("BILLHOUSE_", "DBT_")):
            os.environ.setdefault(name, value)
    manifest_path = settings.dbt_target_dir / "manifest.json"
    if not manifest_path.exists():
        with open_warehouse(settings):
            pass  # the raw tables (dbt sources) exist before dbt parses
        run_dbt(settings, ["parse"])
    timezones = customer_timezones(settings)

    partitions = MultiPartitionsDefinition(
        {
            "date": DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1),
            "timezone": StaticPartitionsDefinition(timezones),
        }
    )

    @dbt_assets(manifest=manifest_path, selector="close", partitions_def=partitions, name="billhouse_dbt")
    def billhouse_dbt(context: AssetExecutionContext, dbt: DbtCliResource):
        day, tz_name = partition_of(context)
        since, as_of = checked_close_window(day, tz_name)
        with open_warehouse(settings):
            pass  # raw tables exist; the store is released before dbt starts
        with close_settings_environment(close_variables(as_of, since, tz_name)) as variables:
            invocation = dbt.cli(
                ["build", *(["--vars", json.dumps(variables)] if variables else [])],
                context=context,
                target_path=settings.dbt_target_dir,
            )
        yield from invocation.stream()

    @asset(
        name="invoices",
        deps=[AssetKey("fct_invoice_drafts")],
        partitions_def=partitions,
        description="Invoice drafts of the close finalized into the ledger (numbers, PDFs).",
    )
    def invoices(context: AssetExecutionContext) -> MaterializeResult:
        day, tz_name = partition_of(context)
        _, as_of = checked_close_window(day, tz_name)
        report = finish_close(settings, as_of, "dagster")
        for number, fee in report.adjustments:
            context.log.warning(
                f"{number}: late-usage adjustment {fee.amount_cents} for {fee.external_subscription_id} "
                f"{fee.billable_metric_code} period {fee.period_start:%Y-%m-%d}..{fee.period_end:%Y-%m-%d}"
            )
        return MaterializeResult(
            metadata={
                "invoices": len(report.invoices),
                "created": len(report.created),
                "created_numbers": ", ".join(i.number for i in report.created),
                "late_adjustments": len(report.adjustments),
                "termination_credit_notes": ", ".join(note.number for note in report.credit_notes),
            }
        )

    close_job = define_asset_job("close", partitions_def=partitions)

    def timezone_schedule(tz_name: str) -> ScheduleDefinition:
        @schedule(
            name=schedule_name(tz_name),
            job=close_job,
            cron_schedule=f"{SCHEDULE_MINUTE_AFTER_MIDNIGHT} 0 * * *",
            execution_timezone=tz_name,
        )
        def close_timezone(context: ScheduleEvaluationContext):
            local = context.scheduled_execution_time.astimezone(ZoneInfo(tz_name))
            day = (local.date() - timedelta(days=1)).isoformat()  # the day that just ended
            return RunRequest(
                run_key=f"{tz_name}/{day}",
                partition_key=MultiPartitionKey({"date": day, "timezone": tz_name}),
                tags={"billhouse/timezone": tz_name, "billhouse/billing_date": day},
            )

        return close_timezone

    return Definitions(
        assets=[billhouse_dbt, invoices],
        jobs=[close_job],
        schedules=[timezone_schedule(tz) for tz in timezones],
        resources={
            "dbt": DbtCliResource(
                project_dir=str(PROJECT_DIR),
                profiles_dir=str(PROJECT_DIR),
                target="chdb",
                dbt_executable=dbt_executable(),
            )
        },
    )


@definitions
def defs() -> Definitions:
    """Loaded by `dagster dev -m orchestration.definitions` (and `make ui`) on the store
    of BILLHOUSE_HOME (default ./.billhouse)."""
    return build_definitions()
