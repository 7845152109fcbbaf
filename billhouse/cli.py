"""The ``billhouse`` command line.

    billhouse demo                       load the demo data, close Oct–Nov 2026, render PDFs
    billhouse load CATALOG.yml [EVENTS.json]
    billhouse close --as-of 2026-12-01T00:00:00Z
    billhouse simulate SCENARIO.yml [--json]   preview a scenario's invoices (throwaway store)
    billhouse invoices                   list the ledger's invoices
    billhouse ledger-stop                stop the embedded PostgreSQL server
    billhouse api-key create NAME        create an events API key (printed once)
    billhouse api-key revoke ID|PREFIX   revoke an events API key
    billhouse serve [--host H] [--port P] [--catalog CATALOG.yml]   run the events API
    billhouse collect                    charge due invoices through Stripe, mark overdue
    billhouse deliver-webhooks           send due webhook deliveries from the outbox
    billhouse webhook-endpoint URL [--event-type T ...]   register a receiver (prints its secret)
    billhouse stripe-customer ID [--stripe-customer cus_..] [--payment-method pm_..]
    billhouse report [--out PATH] [--months N]   HTML revenue report from the last close

Errors print as one line naming the field and the reason; the exit code is 2 for bad
input and 1 for a failed run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from billhouse.catalog import load_catalog, parse_instant
from billhouse.errors import BillhouseError, CatalogError, EventError
from billhouse.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="billhouse", description="Usage-based billing in the warehouse.")
    parser.add_argument("--data-dir", help="data directory (default: $BILLHOUSE_HOME or .billhouse)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="bill a generated demo month end to end")
    load = commands.add_parser("load", help="load a catalog (and optionally events)")
    load.add_argument("catalog", type=Path)
    load.add_argument("events", type=Path, nargs="?", help="a JSON list of events in Lago's shape")
    close = commands.add_parser("close", help="bill every period ended by --as-of")
    close.add_argument("--as-of", required=True, help="ISO 8601 instant, e.g. 2026-12-01T00:00:00Z")
    close.add_argument("--since", help="only periods ending after this instant (a close window)")
    close.add_argument("--timezone", help="only the customers of this IANA timezone (as a Dagster close does)")
    close.add_argument("--all-checks", action="store_true",
                       help="also run every dbt data and unit test, including the full scans of the events")
    simulate = commands.add_parser("simulate", help="preview the invoices of a scenario file")
    simulate.add_argument("scenario", type=Path)
    simulate.add_argument("--json", action="store_true", help="print JSON (scenario-format.md)")
    commands.add_parser("invoices", help="list finalized invoices")
    commands.add_parser("ledger-stop", help="stop the embedded PostgreSQL server")
    _add_ingestion_commands(commands)
    _add_payment_commands(commands)
    _add_report_command(commands)
    args = parser.parse_args(argv)
    settings = Settings.from_env(args.data_dir)
    try:
        return _run(args, settings)
    except (CatalogError, EventError) as error:
        print(f"billhouse: {error}", file=sys.stderr)
        return 2
    except BillhouseError as error:
        print(f"billhouse: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "demo":
        from billhouse.demo_run import run_demo

        run_demo(settings)
    elif args.command == "load":
        from billhouse.close import load_inputs

        from billhouse.commercial_terms import apply_commercial_terms, parse_commercial_terms
        from billhouse.ledger_connection import ledger
        from invoicing.migrations import migrate

        catalog = load_catalog(args.catalog)
        terms = parse_commercial_terms(yaml.safe_load(args.catalog.read_text()) or {}, source=str(args.catalog))
        events = json.loads(args.events.read_text(), parse_float=Decimal) if args.events else []
        count = load_inputs(settings, catalog, events)
        with ledger(settings) as conn:  # taxes, coupons, wallets, payment terms
            migrate(conn)
            apply_commercial_terms(conn, terms)
        print(f"loaded {args.catalog} and {count} events into {settings.data_dir}")
    elif args.command == "close":
        from billhouse.close import ALL_CHECKS_DBT_ARGS, CLOSE_DBT_ARGS, close, collection_summary, held_summary
        from billhouse.summary import print_invoices
        from invoicing.money import format_minor_units

        instants = {}
        for name in ("as_of", "since"):
            value = getattr(args, name)
            try:
                instants[name] = parse_instant(value) if value else None
            except ValueError as error:
                raise CatalogError(f"--{name.replace('_', '-')}", name, str(error)) from error
        if args.timezone:
            try:
                ZoneInfo(args.timezone)
            except (ZoneInfoNotFoundError, ValueError) as error:
                raise CatalogError("--timezone", "timezone", f"unknown IANA timezone {args.timezone!r}") from error
        dbt_args = ALL_CHECKS_DBT_ARGS if args.all_checks else CLOSE_DBT_ARGS
        report = close(settings, instants["as_of"], since=instants["since"], timezone_name=args.timezone,
                       dbt_args=dbt_args)
        print(f"dbt: {report.dbt_summary}")
        print_invoices(report.invoices, report.pdfs)
        for draft in report.held:  # a fee out of range: not issued (docs/operations.md)
            print(f"held, not issued: {held_summary(draft)}")
        currency = {invoice.number: invoice.currency for invoice in report.invoices}
        for number, fee in report.adjustments:  # issue 4: late events billed on this close
            print(f"late-event adjustment on {number}: {fee.invoice_display_name} for"
                  f" {fee.period_start:%Y-%m-%d}–{fee.period_end:%Y-%m-%d},"
                  f" {format_minor_units(fee.amount_cents, currency[number])}")
        for note in report.credit_notes:  # unused days of a terminated pay-in-advance period
            print(f"credit note {note.number} ({note.reason}) on {note.invoice_number} for"
                  f" {note.external_customer_id}: {format_minor_units(note.total_amount_cents, note.currency)}")
        for line in collection_summary(report):  # issue 6: payments and webhooks of the close
            print(line)
    elif args.command == "simulate":
        from billhouse.simulate import invoices_as_json, invoices_as_text, read_scenario, simulate

        invoices = simulate(read_scenario(args.scenario))
        if args.json:
            print(json.dumps(invoices_as_json(invoices), indent=2))
        else:
            print(invoices_as_text(invoices), end="")
    elif args.command == "invoices":
        from billhouse.ledger_connection import ledger
        from billhouse.summary import print_invoices
        from invoicing.ledger import list_invoices

        with ledger(settings) as conn:
            invoices = list_invoices(conn)
        print_invoices(invoices, {i.number: Path(i.pdf_path) for i in invoices if i.pdf_path})
    elif args.command == "ledger-stop":
        from billhouse.ledger_connection import stop_ledger

        print("stopped" if stop_ledger(settings) else "not running")
    elif args.command in ("api-key", "serve"):
        _run_ingestion_command(args, settings)
    elif args.command in _PAYMENT_COMMANDS:
        _run_payment_command(args, settings)
    elif args.command == "report":
        _run_report_command(args, settings)
    return 0


# --- ingestion commands (issue 5): api-key create|revoke, serve ---------------------


def _add_ingestion_commands(commands: argparse._SubParsersAction) -> None:
    from ingestion.config import DEFAULT_MAX_BATCH_EVENTS, DEFAULT_MAX_BODY_BYTES

    api_key = commands.add_parser("api-key", help="create or revoke events API keys")
    key_commands = api_key.add_subparsers(dest="key_command", required=True)
    create = key_commands.add_parser("create", help="create a key; it is printed once")
    create.add_argument("name", help="what the key is for, e.g. 'backend prod'")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id or shown prefix")
    revoke.add_argument("key", help="the key's id or prefix (as printed by create)")
    serve = commands.add_parser("serve", help="run the events API (Lago-compatible)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--catalog", type=Path, help="check events against this catalog's metrics")
    serve.add_argument("--max-batch-events", type=int, default=DEFAULT_MAX_BATCH_EVENTS)
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)


def _run_ingestion_command(args: argparse.Namespace, settings: Settings) -> None:
    from ingestion.config import IngestConfig

    if args.command == "serve":
        from ingestion.server import serve

        config = IngestConfig.for_settings(
            settings,
            catalog_path=args.catalog,
            max_batch_events=args.max_batch_events,
            max_body_bytes=args.max_body_bytes,
        )
        serve(settings, config, host=args.host, port=args.port)
        return
    from billhouse.ledger_connection import ledger
    from ingestion.api_keys import create_api_key, revoke_api_key

    with ledger(settings) as conn:
        if args.key_command == "create":
            created = create_api_key(conn, args.name)
            print(f"id {created.record.id} prefix {created.record.key_prefix} name {created.record.name!r}")
            print(created.secret)
        else:
            revoked = revoke_api_key(conn, args.key)
            print(f"revoked {revoked.id} ({revoked.key_prefix}, {revoked.name!r}) at {revoked.revoked_at}")



# --- payments and webhooks commands (issue 6): collect, deliver-webhooks, ... -------

_PAYMENT_COMMANDS = ("collect", "deliver-webhooks", "webhook-endpoint", "stripe-customer")


def _add_payment_commands(commands: argparse._SubParsersAction) -> None:
    commands.add_parser(
        "collect", help="charge due invoices through Stripe ($STRIPE_API_KEY, $STRIPE_API_BASE)"
    )
    commands.add_parser("deliver-webhooks", help="send the webhook deliveries that are due")
    endpoint = commands.add_parser("webhook-endpoint", help="register a webhook receiver URL")
    endpoint.add_argument("url")
    endpoint.add_argument("--event-type", action="append", help="only this type (repeatable)")
    customer = commands.add_parser("stripe-customer", help="link or create a customer's Stripe customer")
    customer.add_argument("external_customer_id")
    customer.add_argument("--stripe-customer", help="an existing cus_ id (else one is created)")
    customer.add_argument("--payment-method", help="pm_ id to charge off-session from now on")


def _run_payment_command(args: argparse.Namespace, settings: Settings) -> None:
    from billhouse.ledger_connection import ledger
    from invoicing.migrations import migrate

    with ledger(settings) as conn:
        migrate(conn)
        if args.command == "collect":
            from invoicing.dunning import PaymentPolicy
            from invoicing.payments import collect
            from invoicing.stripe_gateway import StripeGateway

            report = collect(conn, StripeGateway.from_env(), policy=PaymentPolicy.from_env())
            print(
                f"taken on {len(report.taken_on)}, paid {len(report.succeeded)},"
                f" failed {len(report.failed)}, processing {len(report.processing)},"
                f" recovered {len(report.recovered)}, no payment method"
                f" {len(report.no_payment_method)}, newly overdue {len(report.overdue)},"
                f" Stripe errors {len(report.errors)}"
            )
        elif args.command == "deliver-webhooks":
            from invoicing.webhooks import deliver_webhooks

            sent = deliver_webhooks(conn)
            print(
                f"delivered {len(sent.delivered)}, retrying {len(sent.retrying)},"
                f" gave up {len(sent.failed)}"
            )
        elif args.command == "webhook-endpoint":
            from invoicing.webhooks import add_webhook_endpoint

            endpoint = add_webhook_endpoint(conn, args.url, event_types=args.event_type)
            print(f"endpoint {endpoint.id} {endpoint.url}")
            print(endpoint.secret)
        else:
            from invoicing.payments import link_stripe_customer, set_up_stripe_customer
            from invoicing.stripe_gateway import StripeGateway

            if args.stripe_customer and not args.payment_method:
                linked = link_stripe_customer(conn, args.external_customer_id, args.stripe_customer)
            else:
                gateway = StripeGateway.from_env()
                if args.stripe_customer:
                    link_stripe_customer(conn, args.external_customer_id, args.stripe_customer)
                linked = set_up_stripe_customer(
                    conn, gateway, args.external_customer_id, payment_method_id=args.payment_method
                )
            print(
                f"{linked.external_customer_id} -> {linked.stripe_customer_id}"
                f" (default payment method {linked.default_payment_method_id or 'none'})"
            )


# --- finance report (issue 7): report ----------------------------------------------


def _add_report_command(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="write the HTML revenue report (MRR, revenue by plan, aging) from the last close"
    )
    report.add_argument("--out", type=Path, help="output file (default: <data dir>/reporting/revenue-report.html)")
    report.add_argument("--months", type=int, default=12, help="months shown, up to the close's month")


def _run_report_command(args: argparse.Namespace, settings: Settings) -> None:
    from billhouse.report import write_report

    print(f"wrote {write_report(settings, args.out, months=args.months)}")


# --- end finance report ------------------------------------------------------------


if __name__ == "__main__":
    raise SystemExit(main())
