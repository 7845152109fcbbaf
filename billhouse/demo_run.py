"""``billhouse demo``: load the demo data set, close, and print what was invoiced."""

from __future__ import annotations

from collections import Counter

from billhouse.close import close, load_inputs
from billhouse.demo import DEMO_AS_OF, demo_catalog, demo_events
from billhouse.settings import Settings
from billhouse.summary import print_invoices
from invoicing.pdf import Seller


def run_demo(settings: Settings) -> None:
    catalog = demo_catalog()
    events = demo_events()
    identities = Counter((e["external_subscription_id"], e["transaction_id"]) for e in events)
    duplicates = sum(count - 1 for count in identities.values())
    print(f"data directory: {settings.data_dir}")
    print(
        f"loading {len(catalog.customers)} customers, {len(catalog.plans)} plans and "
        f"{len(events)} events ({duplicates} resent duplicates, counted once)"
    )
    load_inputs(settings, catalog, events)
    print(f"closing every period ended by {DEMO_AS_OF.isoformat()} (dbt on embedded ClickHouse) …")
    seller = Seller(name=catalog.organization.get("name") or Seller().name)
    report = close(settings, DEMO_AS_OF, seller)
    print(f"dbt build: {report.dbt_summary}")
    print(f"{len(report.created)} new invoices, {len(report.invoices) - len(report.created)} already finalized\n")
    print_invoices(report.invoices, report.pdfs)
