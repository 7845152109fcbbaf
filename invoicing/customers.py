"""Customers' invoicing settings kept in the ledger (the warehouse owns who they are).

Today one setting: ``net_payment_term``, the days from an invoice's issuing date to
its due date (Lago's name; 0 by default: due on issue). It applies to invoices
finalized after it is set; an issued invoice keeps its due date.
"""

from __future__ import annotations

import psycopg

from invoicing.errors import CommercialTermsError

__all__ = ["get_net_payment_term", "set_net_payment_term"]


def set_net_payment_term(conn: psycopg.Connection, external_customer_id: str, days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise CommercialTermsError(f"customer {external_customer_id!r}", "net_payment_term",
                                   f"must be a non-negative number of days, got {days!r}")
    conn.execute(
        "INSERT INTO customer_invoicing_settings (external_customer_id, net_payment_term) VALUES (%s, %s)"
        " ON CONFLICT (external_customer_id) DO UPDATE SET net_payment_term = EXCLUDED.net_payment_term,"
        " updated_at = now()",
        (external_customer_id, days),
    )


def get_net_payment_term(conn: psycopg.Connection, external_customer_id: str) -> int:
    row = conn.execute(
        "SELECT net_payment_term FROM customer_invoicing_settings WHERE external_customer_id = %s",
        (external_customer_id,),
    ).fetchone()
    return int(row[0]) if row else 0
