"""Dagster definitions: the billing close as assets, (day × timezone) partitions and the
close-clock sensor.

The dbt billing models are assets (dagster-dbt, over the manifest, the
project's `close` selector — every billing model, with the invoice drafts' data tests as
asset checks; the other tests run in CI; the finance marts are refreshed by the invoices
step after finalization, as in the CLI close); the invoices
(finalize into the ledger, PDFs, billed-fee mirror) are one asset downstream of
``fct_invoice_drafts``. Both are partitioned by (billing day, customer timezone): the
partition (D, tz) closes the local day D of tz for the customers of tz — everything that
ends in (midnight starting D, midnight ending D]; its invoices are dated D + 1. The
timezone dimension is the dynamic partitions ``customer_timezone``: one sensor,
``close_timezones`` (every 5 minutes), reads the customers' timezones from the store,
adds the new ones (no code-location reload; a timezone left without customers stays,
so its days remain backfillable), and requests, for each timezone, every local day that
has ended at least 5 minutes ago and that it has not requested yet (its cursor keeps the
last day requested per timezone, so a daemon down for hours skips no day and a day is
never requested twice), with run key ``<tz>/<D>``. A timezone seen for the first time
starts with the last day that ended there. Re-running or backfilling a partition issues
nothing twice (the ledger is idempotent by invoice key). Partitions exist up to the
current UTC day (end_offset=1, for timezones ahead of UTC); closing a day that has not
ended in its timezone is refused.

The billing build runs dbt in the step's process (orchestration/dbt_build.py), as the CLI
close does. chDB admits one process per store: the assets open the warehouse only around
dbt, never while it runs, and dbt holds the store lock (billhouse/store_lock.py) while it
runs, so a billhouse step that needs the store meanwhile waits for it; the sensor
opens the store for one query without waiting, and skips its tick (SkipReason, no retry)
while a run is in progress or the store is held — the next tick requests whatever came
due meanwhile.
"""

import json
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.exceptions import ProgrammingError
from dagster import (
    AddDynamicPartitionsRequest,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    definitions,
    define_asset_job,
    in_process_executor,
    sensor,
)
from dagster_dbt import DbtProject, dbt_assets

from billhouse.close import close_variables, finish_close, held_summary, take_in_events
from billhouse.errors import BillhouseError
from billhouse.dbt_runner import run_dbt
from billhouse.settings import PROJECT_DIR, Settings
from billhouse.store_lock import StoreBusyError
from billhouse.warehouse import open_warehouse
from orchestration.dbt_build import dbt_build_events

PARTITIONS_START = "2024-01-01"
TIMEZONE_PARTITIONS = DynamicPartitionsDefinition(name="customer_timezone")
CLOSE_SENSOR_NAME = "close_timezones"
# the invoices asset's check: no draft of the close held (a fee out of range)
NO_HELD_INVOICES_CHECK = "no_held_invoices"
CLOSE_SENSOR_INTERVAL_SECONDS = 5 * 60
# A day is closed once it has been over for this long in its timezone (the events of its
# last minutes arrive), i.e. from 00:05 local time, like the former per-timezone schedules.
CLOSE_DELAY = timedelta(minutes=5)
# Runs in these states hold the store or are about to take it: the sensor leaves it alone.
STORE_HOLDING_RUN_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
# clickhouse-connect's message when chDB cannot open the store (another process owns it).
_STORE_OPEN_FAILURE = "Unable to open the chdb engine"


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


def customer_timezones(settings: Settings, wait: bool = True) -> list[str]:
    """The distinct timezones of the customers in the store (none when it has no customer);
    ``wait=False`` raises StoreBusyError instead of waiting for a step that holds the store."""
    with open_warehouse(settings, wait=wait) as warehouse:
        rows = warehouse.query("select distinct timezone from billhouse_raw.customers order by timezone")
    return [row["timezone"] for row in rows]


def last_ended_day(tz_name: str, instant: datetime) -> date:
    """The last local day of ``tz_name`` whose close window had ended at ``instant``."""
    day = instant.astimezone(ZoneInfo(tz_name)).date() - timedelta(days=1)
    while close_window(day, tz_name)[1] > instant:  # defensive: a midnight a DST switch skips
        day -= timedelta(days=1)
    return day


def days_to_close(tz_name: str, last_requested: date | None, now: datetime) -> list[date]:
    """The local days of ``tz_name`` the clock requests at ``now``: every day after
    ``last_requested`` that has been over for CLOSE_DELAY, oldest first (a missed tick
    skips no day); for a timezone never requested, only the last day that ended."""
    last_due = last_ended_day(tz_name, now - CLOSE_DELAY)
    if last_requested is None:
        return [last_due]
    return [last_requested + timedelta(days=n) for n in range(1, (last_due - last_requested).days + 1)]


def close_run_request(tz_name: str, day: date) -> RunRequest:
    """The run closing the local day ``day`` of ``tz_name``: partition (day, tz), run key ``<tz>/<D>``."""
    billing_date = day.isoformat()
    return RunRequest(
        run_key=f"{tz_name}/{billing_date}",
        partition_key=MultiPartitionKey({"date": billing_date, "timezone": tz_name}),
        tags={"billhouse/timezone": tz_name, "billhouse/billing_date": billing_date},
    )


def parse_clock_cursor(cursor: str | None) -> dict[str, date]:
    """The sensor cursor: the last local day requested, per timezone (JSON object)."""
    return {tz: date.fromisoformat(day) for tz, day in json.loads(cursor or "{}").items()}


def format_clock_cursor(last_requested: Mapping[str, date]) -> str:
    return json.dumps({tz: day.isoformat() for tz, day in sorted(last_requested.items())})


def store_holding_runs(instance: DagsterInstance) -> list[str]:
    """Ids of the runs of this instance that hold the store or are about to take it."""
    runs = instance.get_runs(filters=RunsFilter(statuses=STORE_HOLDING_RUN_STATUSES), limit=5)
    return [run.run_id for run in runs]


def evaluate_close_clock(context: SensorEvaluationContext, settings: Settings, now: datetime) -> SensorResult | SkipReason:
    """One tick of the close clock at ``now`` (see the module docstring)."""
    holding = store_holding_runs(context.instance)
    if holding:
        return SkipReason(
            f"store busy: run(s) {', '.join(holding)} in progress or queued; the store is left to them "
            "and the next tick closes whatever came due meanwhile"
        )
    try:
        timezones = customer_timezones(settings, wait=False)
    except StoreBusyError as exc:
        return SkipReason(f"store busy: {exc}; not retried, the next tick closes whatever came due meanwhile")
    except ProgrammingError as exc:  # a process outside billhouse's lock (a dbt run by hand)
        if _STORE_OPEN_FAILURE not in str(exc):
            raise
        return SkipReason(
            f"store busy: another process owns {settings.chdb_path} (chDB admits one process per store); "
            f"not retried, the next tick closes whatever came due meanwhile ({exc})"
        )
    if not timezones:
        return SkipReason("no customer in the store: no timezone to close")
    known = set(context.instance.get_dynamic_partitions(TIMEZONE_PARTITIONS.name))
    new_timezones = [tz for tz in timezones if tz not in known]
    last_requested = parse_clock_cursor(context.cursor)
    run_requests: list[RunRequest] = []
    for tz_name in timezones:
        days = days_to_close(tz_name, last_requested.get(tz_name), now)
        run_requests += [close_run_request(tz_name, day) for day in days]
        if days:
            last_requested[tz_name] = days[-1]
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=(
            [AddDynamicPartitionsRequest(TIMEZONE_PARTITIONS.name, new_timezones)] if new_timezones else []
        ),
        cursor=format_clock_cursor(last_requested),
        skip_reason=None if run_requests else f"no day has ended since the last close in {', '.join(timezones)}",
    )


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def partition_of(context: AssetExecutionContext) -> tuple[date, str]:
    key = context.partition_key
    dims = key.keys_by_dimension if isinstance(key, MultiPartitionKey) else dict(
        part.split("=", 1) for part in str(key).split("|")
    )
    return date.fromisoformat(dims["date"]), dims["timezone"]


def build_definitions(settings: Settings | None = None, clock: Callable[[], datetime] = utc_now) -> Definitions:
    """The Definitions on the store of ``settings``; ``clock`` is the close clock's time
    (tests pass a fixed instant)."""
    settings = settings or Settings.from_env()
    manifest_path = settings.dbt_target_dir / "manifest.json"
    if not manifest_path.exists():
        with open_warehouse(settings):
            pass  # the raw tables (dbt sources) exist before dbt parses
        run_dbt(settings, ["parse"])

    partitions = MultiPartitionsDefinition(
        {
            "date": DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1),
            "timezone": TIMEZONE_PARTITIONS,
        }
    )

    # the project, so that dbt's `path:` selection in the close selector (the drafts'
    # data tests, the asset checks) resolves from the project, not the working directory
    project = DbtProject(project_dir=PROJECT_DIR, target_path=settings.dbt_target_dir, profiles_dir=PROJECT_DIR)

    @dbt_assets(
        manifest=manifest_path, project=project, selector="close", partitions_def=partitions, name="billhouse_dbt"
    )
    def billhouse_dbt(context: AssetExecutionContext):
        day, tz_name = partition_of(context)
        since, as_of = checked_close_window(day, tz_name)
        with open_warehouse(settings) as warehouse:
            # the events the API accepted since the last close, loaded exactly once, and
            # the identities they duplicate (as `billhouse close` does); the store is
            # released before dbt starts, in its own thread (orchestration/dbt_build.py)
            landed = take_in_events(warehouse, settings)
        context.log.info(f"landed events loaded: {landed.rows} ({landed.frames} frames)")
        for recovery in landed.recovered:  # a chunk a crashed load left pending
            context.log.warning(f"landing: {recovery}")
        # dbt runs in this process and holds the store lock: other billhouse steps wait
        yield from dbt_build_events(context, settings, close_variables(as_of, since, tz_name))

    @asset(
        name="invoices",
        deps=[AssetKey("fct_invoice_drafts")],
        partitions_def=partitions,
        description="Invoice drafts of the close finalized into the ledger (numbers, PDFs).",
        check_specs=[AssetCheckSpec(
            NO_HELD_INVOICES_CHECK, asset="invoices",
            description="Every draft of the close was issued: none held for a fee out of range "
                        "(docs/operations.md, Held invoices).",
        )],
    )
    def invoices(context: AssetExecutionContext) -> MaterializeResult:
        day, tz_name = partition_of(context)
        _, as_of = checked_close_window(day, tz_name)
        report = finish_close(settings, as_of, "dagster")
        for draft in report.held:
            context.log.warning(f"held, not issued: {held_summary(draft)}")
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
                "held": ", ".join(draft.invoice_key for draft in report.held),
            },
            check_results=[AssetCheckResult(
                check_name=NO_HELD_INVOICES_CHECK,
                passed=not report.held,
                severity=AssetCheckSeverity.WARN,  # the other invoices were issued
                metadata={"held": "; ".join(held_summary(draft) for draft in report.held)},
            )],
        )

    close_job = define_asset_job("close", partitions_def=partitions)

    @sensor(
        name=CLOSE_SENSOR_NAME,
        job=close_job,
        minimum_interval_seconds=CLOSE_SENSOR_INTERVAL_SECONDS,
        description=(
            "Adds the customers' new timezones to the customer_timezone partitions and closes, "
            "in each timezone, every local day that has ended since its last close (run key <tz>/<D>)."
        ),
    )
    def close_timezones(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        return evaluate_close_clock(context, settings, clock())

    return Definitions(
        # both steps in the run's process: a step process per step starts Python and
        # loads the code location again (4-5 s each, docs/performance.md); a close's two
        # steps run one after the other anyway (invoices needs the drafts, chDB one process)
        executor=in_process_executor,
        assets=[billhouse_dbt, invoices],
        jobs=[close_job],
        sensors=[close_timezones],
    )


@definitions
def defs() -> Definitions:
    """Loaded by `dagster dev -m orchestration.definitions` (and `make ui`) on the store
    of BILLHOUSE_HOME (default ./.billhouse)."""
    return build_definitions()
