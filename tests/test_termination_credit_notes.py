"""Termination credit notes: the unused days of a fee billed before the end was known.

The day-counting rules are checked as a table of hand-computed cases (pure Python); the
close is checked on the real engines (chDB + dbt + embedded PostgreSQL) with one
scenario built once for the module:

- close 1 (as of 2026-04-02) bills the March and April advance fees while no
  termination is known — except ``sub_known``'s, known then and prorated by the clock;
- the terminations and a plan change are recorded, a manual credit note is issued;
- close 2 (as of 2026-05-02) issues the termination credit notes and the invoices that
  consume them; close 3 re-runs close 2 and must issue nothing.

Every amount is computed by hand in the comments next to it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from billhouse.catalog import parse_catalog
from billhouse.close import CloseReport, close, load_inputs
from billhouse.commercial_terms import parse_commercial_terms
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from invoicing.credit_notes import CreditNote, create_credit_note, list_credit_notes
from invoicing.ledger import FinalizedInvoice, list_invoices
from invoicing.termination_credits import (
    SubscriptionEnd,
    credit_unused_subscription_days,
    read_subscription_ends,
    termination_credit_cents,
    unused_days,
)

# -- the rules, hand-computed ---------------------------------------------------------


def _end(end_date: str, timezone: str = "UTC", trial_end: str = "2000-01-01") -> SubscriptionEnd:
    return SubscriptionEnd("sub", "cus", timezone, date.fromisoformat(end_date), date.fromisoformat(trial_end), False)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# (case, end, fee period start, fee period end (UTC instants), fee worth in cents,
#  unused days, covered days, credit in cents)
CASES = [
    # terminated March 10: unused March 11–31 = 21 of 31 days; 3100 × 21 / 31 = 2100
    ("march, terminated on the 10th", _end("2026-03-11"), "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z",
     3100, 21, 31, 2100),
    # terminated April 20: unused April 21–30 = 10 of 30; 3000 × 10 / 30 = 1000
    ("30-day april, terminated on the 20th", _end("2026-04-21"), "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z",
     3000, 10, 30, 1000),
    # terminated on the last day: nothing unused
    ("terminated april 30", _end("2026-05-01"), "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z", 3000, 0, 30, 0),
    # the period starts after the end (billed before the termination was known): all of it
    ("april fee after a march termination", _end("2026-03-11"), "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z",
     3000, 30, 30, 3000),
    # known when billed: the clock cut the period to March 1–10 (10/31 × 3100 = 1000)
    ("termination known at billing", _end("2026-03-11"), "2026-03-01T00:00:00Z", "2026-03-11T00:00:00Z",
     1000, 0, 10, 0),
    # half-up once: 1000 × 11 / 31 = 354.84 → 355 (March 21–31)
    ("rounds half-up", _end("2026-03-21"), "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", 1000, 11, 31, 355),
    # 45 × 1 / 30 = 1.5 → 2 (April 30 only)
    ("a half cent rounds up", _end("2026-04-30"), "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z", 45, 1, 30, 2),
    # prorated first period March 15–31 (17/31 × 100 = 55); ended March 21: unused
    # March 21–31 = 11 of the 17 days the fee covered; 55 × 11 / 17 = 35.59 → 36
    ("prorated first period", _end("2026-03-21"), "2026-03-15T00:00:00Z", "2026-04-01T00:00:00Z", 55, 11, 17, 36),
    # 10-day trial from April 1: the fee covered April 11–30 (20 days, 2000); ended
    # April 21: unused April 21–30 = 10 of 20; 2000 × 10 / 20 = 1000
    ("trial days were never paid", _end("2026-04-21", trial_end="2026-04-11"), "2026-04-01T00:00:00Z",
     "2026-05-01T00:00:00Z", 2000, 10, 20, 1000),
    # ended during the trial: every paid day is unused
    ("ended during the trial", _end("2026-04-06", trial_end="2026-04-11"), "2026-04-01T00:00:00Z",
     "2026-05-01T00:00:00Z", 2000, 20, 20, 2000),
    # Paris, March = 2026-02-28T23:00Z – 2026-03-31T22:00Z (DST on the 29th), terminated
    # 2026-03-10T23:30Z = March 11 00:30 local: unused March 12–31 = 20 of 31; 3100 × 20 / 31
    ("local days in paris across DST", _end("2026-03-12", "Europe/Paris"), "2026-02-28T23:00:00Z",
     "2026-03-31T22:00:00Z", 3100, 20, 31, 2000),
    # New York, November = 2026-11-01T04:00Z – 2026-12-01T05:00Z; ended Nov 16: 15 of 30
    ("local days in new york across DST", _end("2026-11-16", "America/New_York"), "2026-11-01T04:00:00Z",
     "2026-12-01T05:00:00Z", 3000, 15, 30, 1500),
    # worth includes the fee's tax and excludes its coupon share: (999 + 199.8) × 10 / 30
    # = 399.6 → 400
    ("tax included", _end("2026-04-21"), "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z", Decimal("1198.8"),
     10, 30, 400),
]


@pytest.mark.parametrize(("case", "end", "start", "stop", "worth", "unused", "covered", "credit"), CASES,
                         ids=[c[0] for c in CASES])
def test_unused_days_and_credit_follow_the_clocks_day_counting(case, end, start, stop, worth, unused, covered,
                                                                credit) -> None:
    days = unused_days(end, _utc(start), _utc(stop))
    assert (days.unused_days, days.covered_days) == (unused, covered)
    assert termination_credit_cents(Decimal(worth), days.unused_days, days.covered_days) == credit


def test_a_subscription_ends_at_local_midnight_of_its_end_date() -> None:
    # March 12 00:00 in Paris (CET, +1) is 2026-03-11T23:00Z
    assert _end("2026-03-12", "Europe/Paris").ended_at == _utc("2026-03-11T23:00:00Z")
    plan_change = SubscriptionEnd("sub", "cus", "UTC", date(2026, 4, 16), date(2026, 4, 1), True)
    assert (plan_change.reason, _end("2026-04-16").reason) == ("order_change", "order_cancellation")


# -- the close, on the real engines ---------------------------------------------------

AS_OF_1 = datetime(2026, 4, 2, tzinfo=UTC)
AS_OF_2 = datetime(2026, 5, 2, tzinfo=UTC)

DOCUMENT = yaml.safe_load("""
billable_metrics:
  - {code: calls, aggregation_type: count_agg}
taxes:
  - {code: vat_20, name: "VAT 20%", rate: "20"}
plans:
  - {code: advance_3100, name: Advance 31, interval: monthly, amount_cents: 3100, amount_currency: EUR,
     pay_in_advance: true, charges: []}
  - {code: advance_3000, name: Advance 30, interval: monthly, amount_cents: 3000, amount_currency: EUR,
     pay_in_advance: true, charges: []}
  - {code: advance_999, name: Advance 9.99, interval: monthly, amount_cents: 999, amount_currency: EUR,
     pay_in_advance: true, charges: []}
  - {code: premium_6000, name: Premium, interval: monthly, amount_cents: 6000, amount_currency: EUR,
     pay_in_advance: true, charges: []}
  - {code: arrears_1000, name: Arrears, interval: monthly, amount_cents: 1000, amount_currency: EUR, charges: []}
  - {code: arrears_usage, name: Arrears with usage, interval: monthly, amount_cents: 1000, amount_currency: EUR,
     charges: [{billable_metric_code: calls, charge_model: standard, properties: {amount: "0.10"}}]}
customers:
  - {external_id: cus_march, currency: EUR}
  - {external_id: cus_paris, currency: EUR, timezone: Europe/Paris}
  - {external_id: cus_known, currency: EUR}
  - {external_id: cus_april, currency: EUR}
  - {external_id: cus_lastday, currency: EUR}
  - {external_id: cus_upgrade, currency: EUR}
  - {external_id: cus_vat, currency: EUR, tax_codes: [vat_20]}
  - {external_id: cus_capped, currency: EUR}
  - {external_id: cus_retro, currency: EUR}
subscriptions:
  - {external_id: sub_march, external_customer_id: cus_march, plan_code: advance_3100,
     subscription_at: "2026-03-01T00:00:00Z"}
  - {external_id: sub_march_other, external_customer_id: cus_march, plan_code: arrears_1000,
     subscription_at: "2026-03-01T00:00:00Z"}
  - {external_id: sub_paris, external_customer_id: cus_paris, plan_code: advance_3100,
     subscription_at: "2026-03-01T00:00:00+01:00"}
  - {external_id: sub_known, external_customer_id: cus_known, plan_code: advance_3100,
     subscription_at: "2026-03-01T00:00:00Z", terminated_at: "2026-03-10T15:00:00Z"}
  - {external_id: sub_april, external_customer_id: cus_april, plan_code: advance_3000,
     subscription_at: "2026-04-01T00:00:00Z"}
  - {external_id: sub_lastday, external_customer_id: cus_lastday, plan_code: advance_3000,
     subscription_at: "2026-04-01T00:00:00Z"}
  - {external_id: sub_basic, external_customer_id: cus_upgrade, plan_code: advance_3000,
     subscription_at: "2026-04-01T00:00:00Z"}
  - {external_id: sub_vat, external_customer_id: cus_vat, plan_code: advance_999,
     subscription_at: "2026-04-01T00:00:00Z"}
  - {external_id: sub_capped, external_customer_id: cus_capped, plan_code: advance_3000,
     subscription_at: "2026-04-01T00:00:00Z"}
  - {external_id: sub_retro, external_customer_id: cus_retro, plan_code: arrears_usage,
     subscription_at: "2026-03-01T00:00:00Z"}
""")

# recorded after close 1: terminations inside the billed periods, and an upgrade
TERMINATIONS = {
    "sub_march": "2026-03-10T15:00:00Z",
    "sub_paris": "2026-03-10T23:30:00Z",  # March 11, 00:30 in Paris
    "sub_april": "2026-04-20T08:00:00Z",
    "sub_lastday": "2026-04-30T18:00:00Z",
    "sub_vat": "2026-04-20T08:00:00Z",
    "sub_capped": "2026-04-20T08:00:00Z",
    # in arrears, March already invoiced (April 1) with its usage: recorded afterwards
    "sub_retro": "2026-03-10T15:00:00Z",
}
# five calls in March for sub_retro, at 0.10: 50 cents of usage on the April 1 invoice
RETRO_EVENTS = [
    {"transaction_id": f"retro-{i}", "external_subscription_id": "sub_retro", "code": "calls",
     "timestamp": f"2026-03-{i + 2:02d}T12:00:00Z", "properties": {}}
    for i in range(5)
]
UPGRADE = {"external_id": "sub_premium", "external_customer_id": "cus_upgrade", "plan_code": "premium_6000",
           "subscription_at": "2026-04-16T09:00:00Z", "previous_subscription_id": "sub_basic"}


def _with_terminations(document: dict) -> dict:
    changed = copy.deepcopy(document)
    for subscription in changed["subscriptions"]:
        if subscription["external_id"] in TERMINATIONS:
            subscription["terminated_at"] = TERMINATIONS[subscription["external_id"]]
    changed["subscriptions"].append(UPGRADE)
    return changed


@dataclass
class Scenario:
    settings: Settings
    first: CloseReport
    second: CloseReport
    rerun: CloseReport
    manual_note: CreditNote

    def invoice(self, customer: str, issuing_date: str) -> FinalizedInvoice:
        with ledger(self.settings) as conn:
            (invoice,) = [
                i for i in list_invoices(conn) if i.external_customer_id == customer
                and i.issuing_date == date.fromisoformat(issuing_date)
            ]
        return invoice

    def notes(self, customer: str) -> list[CreditNote]:
        with ledger(self.settings) as conn:
            return list_credit_notes(conn, external_customer_id=customer)

    def termination_notes(self, customer: str) -> list[tuple[str, str, int]]:
        """(issuing date of the credited invoice, reason, credit) per termination note."""
        with ledger(self.settings) as conn:
            dates = {i.id: i.issuing_date.isoformat() for i in list_invoices(conn)}
        return [(dates[n.invoice_id], n.reason, n.credit_amount_cents)
                for n in self.notes(customer) if n.id != self.manual_note.id]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("termination")))
    terms = parse_commercial_terms(DOCUMENT)
    try:
        load_inputs(settings, parse_catalog(DOCUMENT), RETRO_EVENTS)
        first = close(settings, AS_OF_1, terms=terms, refresh_finance_marts=False)
        with ledger(settings) as conn:
            (capped,) = [i for i in list_invoices(conn) if i.external_customer_id == "cus_capped"]
            manual = create_credit_note(conn, capped.id, idempotency_key="manual-capped", credit_amount_cents=2500,
                                        reason="other")
        load_inputs(settings, parse_catalog(_with_terminations(DOCUMENT)), [])
        second = close(settings, AS_OF_2, terms=terms, refresh_finance_marts=False)
        rerun = close(settings, AS_OF_2, terms=terms, refresh_finance_marts=False)
        yield Scenario(settings, first, second, rerun, manual)
    finally:
        stop_ledger(settings)


def test_close_one_bills_full_advance_fees_and_prorates_a_termination_it_knows(scenario: Scenario) -> None:
    assert scenario.first.credit_notes == []
    # 3100 for March, then 3100 (April, advance) + 1000 (March, arrears plan) on April 1
    assert scenario.invoice("cus_march", "2026-03-01").sub_total_cents == 3100
    assert scenario.invoice("cus_march", "2026-04-01").sub_total_cents == 4100
    # known at billing: March 1–10 = 10/31 × 3100 = 1000, and no credit note ever
    assert scenario.invoice("cus_known", "2026-03-01").sub_total_cents == 1000
    assert scenario.notes("cus_known") == []
    # 999 + VAT 20 % (199.8 → 200) = 1199
    vat = scenario.invoice("cus_vat", "2026-04-01")
    assert (vat.sub_total_cents, vat.taxes_cents, vat.total_cents) == (999, 200, 1199)


def test_a_march_termination_credits_21_of_31_days_and_the_april_fee_in_full(scenario: Scenario) -> None:
    # terminated March 10 (UTC): unused March 11–31 = 21/31 × 3100 = 2100; the April fee,
    # billed April 1 before the termination was known, is wholly unused: 3100
    assert scenario.termination_notes("cus_march") == [
        ("2026-03-01", "order_cancellation", 2100), ("2026-04-01", "order_cancellation", 3100)]
    march = scenario.notes("cus_march")[0]
    assert march.description == ("Advance 31 (sub_march): unused days after termination,"
                                 " 2026-03-11 to 2026-03-31 (21 of 31 days)")
    assert (march.refund_amount_cents, march.total_amount_cents, march.taxes_amount_cents) == (0, 2100, 0)


def test_days_are_counted_in_the_customers_timezone(scenario: Scenario) -> None:
    # 2026-03-10T23:30Z is March 11 in Paris: the 11th is billed, March 12–31 = 20/31 × 3100
    assert scenario.termination_notes("cus_paris") == [
        ("2026-03-01", "order_cancellation", 2000), ("2026-04-01", "order_cancellation", 3100)]


def test_a_30_day_month_credits_10_of_30_days(scenario: Scenario) -> None:
    # terminated April 20: unused April 21–30 = 10/30 × 3000 = 1000
    assert scenario.termination_notes("cus_april") == [("2026-04-01", "order_cancellation", 1000)]


def test_a_termination_on_the_last_day_issues_nothing(scenario: Scenario) -> None:
    assert scenario.notes("cus_lastday") == []


def test_an_upgrade_credits_the_old_plan_from_the_change_day_and_the_new_invoice_consumes_it(
    scenario: Scenario,
) -> None:
    # basic 3000 paid for April; premium from April 16: the change day is the new plan's,
    # unused April 16–30 = 15/30 × 3000 = 1500, reason order_change
    assert scenario.termination_notes("cus_upgrade") == [("2026-04-01", "order_change", 1500)]
    # premium April 16–30 = 15/30 × 6000 = 3000, billed April 17 (started at 09:00): the
    # credit note (issued before this close finalized) pays 1500 of it
    premium = scenario.invoice("cus_upgrade", "2026-04-17")
    assert (premium.sub_total_cents, premium.credit_notes_cents, premium.total_cents) == (3000, 1500, 1500)
    may = scenario.invoice("cus_upgrade", "2026-05-01")
    assert (may.sub_total_cents, may.credit_notes_cents, may.total_cents) == (6000, 0, 6000)
    assert [n.balance_amount_cents for n in scenario.notes("cus_upgrade")] == [0]


def test_the_credit_is_consumed_by_the_customers_next_invoice(scenario: Scenario) -> None:
    # May 1: the arrears plan's April fee, 1000, paid by the oldest credit note (2100 → 1100)
    may = scenario.invoice("cus_march", "2026-05-01")
    assert (may.sub_total_cents, may.credit_notes_cents, may.total_cents) == (1000, 1000, 0)
    (line,) = may.credit_note_credits
    first, second = scenario.notes("cus_march")
    assert (line.credit_note_number, line.amount_cents) == (first.number, 1000)
    assert (first.balance_amount_cents, second.balance_amount_cents) == (1100, 3100)


def test_the_credit_includes_the_fees_tax(scenario: Scenario) -> None:
    # (999 + 199.8 tax) × 10/30 = 399.6 → 400; tax part 400 × 200 / 1199 = 66.7 → 67
    (note,) = scenario.notes("cus_vat")
    assert (note.total_amount_cents, note.credit_amount_cents, note.taxes_amount_cents) == (400, 400, 67)


def test_the_credit_never_exceeds_what_the_invoice_has_left(scenario: Scenario) -> None:
    # 3000 invoice, 2500 credited by hand before: 10/30 × 3000 = 1000 is capped at 500
    assert scenario.termination_notes("cus_capped") == [("2026-04-01", "order_cancellation", 500)]


def test_a_termination_recorded_after_its_period_was_invoiced_does_not_bill_it_again(
    scenario: Scenario,
) -> None:
    # close 1 billed March on April 1: 1000 + 5 calls × 0.10 = 1050. Terminated March 10
    # afterwards, the period would now close on March 11 with the same fee keys: nothing
    # is drafted again (no March 11 invoice), the close does not fail, and the unused
    # days of the fee are credited: 1000 × 21/31 = 677.42 → 677
    assert scenario.invoice("cus_retro", "2026-04-01").sub_total_cents == 1050
    with ledger(scenario.settings) as conn:
        dates = sorted(i.issuing_date.isoformat() for i in list_invoices(conn) if i.external_customer_id == "cus_retro")
    assert dates == ["2026-04-01"]
    assert scenario.termination_notes("cus_retro") == [("2026-04-01", "order_cancellation", 677)]


def test_rerunning_the_close_issues_no_credit_note_and_no_invoice(scenario: Scenario) -> None:
    # march 2, paris 2, april, upgrade, vat, capped, retro
    assert len(scenario.second.credit_notes) == 9
    assert (scenario.rerun.credit_notes, scenario.rerun.created) == ([], [])
    with ledger(scenario.settings) as conn:
        count = conn.execute("SELECT count(*) FROM credit_notes").fetchone()[0]
        assert count == 10  # the 9 termination notes + the manual one
        # calling the step directly again issues nothing either
        with open_warehouse(scenario.settings) as warehouse:
            ends = read_subscription_ends(warehouse)
        assert credit_unused_subscription_days(conn, ends, AS_OF_2) == []


def test_each_termination_note_sends_one_credit_note_created_event(scenario: Scenario) -> None:
    with ledger(scenario.settings) as conn:
        rows = conn.execute(
            "SELECT object_id, count(*) FROM webhook_events WHERE event_type = 'credit_note.created'"
            " GROUP BY object_id"
        ).fetchall()
    counts = dict(rows)
    assert all(counts[str(note.id)] == 1 for note in scenario.second.credit_notes)


def test_subscription_ends_are_read_like_the_billing_clock(scenario: Scenario) -> None:
    with open_warehouse(scenario.settings) as warehouse:
        ends = {end.external_subscription_id: end for end in read_subscription_ends(warehouse)}
    assert set(ends) == {*TERMINATIONS, "sub_known", "sub_basic"}
    assert (ends["sub_paris"].end_date, ends["sub_paris"].timezone) == (date(2026, 3, 12), "Europe/Paris")
    assert (ends["sub_basic"].end_date, ends["sub_basic"].plan_change) == (date(2026, 4, 16), True)
    assert (ends["sub_march"].end_date, ends["sub_march"].plan_change) == (date(2026, 3, 11), False)
