"""The Dagster close's dbt build, run in the step's process.

dagster-dbt's ``DbtCliResource`` starts a ``dbt`` subprocess per build, and before it
runs ``dbt --version`` (another subprocess) and sets up an adapter in the step: about
4 s before dbt starts, then dbt's own start and import (docs/performance.md). The build
here runs through ``run_dbt`` (dbt's programmatic runner, the store lock held, as the
CLI close does), and dbt's result events become Dagster events with dagster-dbt's own
conversion (``DbtCoreCliEventMessage.to_default_asset_events``): an ``Output`` per
model or seed, a check result or observation per test. The selection is dagster-dbt's
for the step (the whole ``close`` selector, or the subset chosen in the UI).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import AssetExecutionContext
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
from dagster_dbt.dagster_dbt_translator import DagsterDbtTranslator

from billhouse.dbt_runner import run_dbt
from billhouse.settings import Settings

# dbt's events that carry a node's result (what dagster-dbt turns into asset events)
RESULT_EVENTS = frozenset({"LogModelResult", "LogSeedResult", "LogSnapshotResult", "LogTestResult"})


def dbt_build_events(
    context: AssetExecutionContext, settings: Settings, variables: Mapping[str, Any]
) -> Iterator[Any]:
    """Build the step's dbt selection with ``variables`` (the close settings); yield the
    Dagster events of each node as it finishes, then raise DbtRunError if dbt failed."""
    from dbt_common.events.functions import msg_to_dict

    params = get_updated_cli_invocation_params_for_context(
        context=context, manifest={}, dagster_dbt_translator=DagsterDbtTranslator()
    )
    args = ["build", *params.selection_args]
    if params.indirect_selection:
        args += ["--indirect-selection", params.indirect_selection]

    # dbt runs in a worker thread and its results are converted as they arrive: Dagster
    # stores each event (about 3 s for a close's 56 nodes), meanwhile dbt goes on
    results: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    outcome: dict[str, Any] = {}

    def keep_result(event: Any) -> None:  # called from dbt's threads
        if event.info.name in RESULT_EVENTS:
            results.put(msg_to_dict(event))

    def build() -> None:
        try:
            outcome["result"] = run_dbt(settings, args, dict(variables), on_event=keep_result)
        except BaseException as exc:  # re-raised in the step's thread
            outcome["error"] = exc
        finally:
            results.put(None)

    worker = threading.Thread(target=build, name="dbt-build", daemon=True)
    worker.start()
    while (raw_event := results.get()) is not None:
        yield from DbtCoreCliEventMessage(raw_event=raw_event, event_history_metadata={}).to_default_asset_events(
            manifest=params.manifest,
            dagster_dbt_translator=params.dagster_dbt_translator,
            context=context,
            target_path=settings.dbt_target_dir,
        )
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    context.log.info(f"dbt {' '.join(args)}: {outcome['result'].summary}")
