"""The demo: a small, realistic month of usage, billed end to end.

Six customers in three currencies and five timezones subscribe at local midnight on
2026-10-01; a few thousand events arrive over October and November, some of them sent
twice (same transaction id). The close at 2026-12-01T12:00Z — past local midnight of
December 1 in every customer's timezone — bills both months. Everything is generated from a fixed seed, so
every run produces the same invoices, and a second run adds none.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from billhouse.catalog import Catalog, parse_catalog
from billhouse.settings import PROJECT_DIR

DEMO_CATALOG = PROJECT_DIR / "seeds" / "demo_catalog.yml"
DEMO_AS_OF = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
DEMO_START = datetime(2026, 10, 1, tzinfo=timezone.utc)

CUSTOMERS = [
    # external_id, name, currency, timezone, plan, mean daily API calls
    ("cus_hooli", "Hooli Europe GmbH", "EUR", "Europe/Berlin", "starter_eur", 40),
    ("cus_piedpiper", "Pied Piper SAS", "EUR", "Europe/Paris", "starter_eur", 25),
    ("cus_initech", "Initech Ltd", "EUR", "Europe/Dublin", "starter_eur", 0),
    ("cus_globex", "Globex Corporation", "USD", "America/New_York", "starter_usd", 35),
    ("cus_umbrella", "Umbrella Labs Inc.", "USD", "America/Los_Angeles", "starter_usd", 15),
    ("cus_tanaka", "Tanaka Shoji K.K.", "JPY", "Asia/Tokyo", "business_jpy", 30),
]


def demo_catalog() -> Catalog:
    document = yaml.safe_load(DEMO_CATALOG.read_text())
    document["customers"] = [
        {"external_id": cid, "name": name, "currency": currency, "timezone": tz}
        for cid, name, currency, tz, _, _ in CUSTOMERS
    ]
    document["subscriptions"] = [
        {
            "external_id": f"sub_{cid.removeprefix('cus_')}",
            "external_customer_id": cid,
            "plan_code": plan,
            # local midnight of October 1 in the customer's timezone: whole calendar months
            "subscription_at": DEMO_START.replace(tzinfo=ZoneInfo(tz)).isoformat(),
        }
        for cid, _, _, tz, plan, _ in CUSTOMERS
    ]
    return parse_catalog(document, source=str(DEMO_CATALOG))


def demo_events(seed: int = 2026) -> list[dict[str, Any]]:
    """API calls and storage readings for Oct–Nov 2026, with ~3 % resent duplicates."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    days = (DEMO_AS_OF - DEMO_START).days
    for cid, _, _, _, plan, daily_calls in CUSTOMERS:
        subscription = f"sub_{cid.removeprefix('cus_')}"
        for day in range(days):
            midnight = DEMO_START + timedelta(days=day)
            for call in range(rng.randint(daily_calls // 2, daily_calls * 3 // 2) if daily_calls else 0):
                events.append(
                    {
                        "transaction_id": f"{subscription}-call-{day:03d}-{call:04d}",
                        "external_subscription_id": subscription,
                        "code": "api_calls",
                        "timestamp": (midnight + timedelta(seconds=rng.randrange(86_400))).isoformat(),
                        "properties": {"endpoint": rng.choice(["/v1/search", "/v1/embed", "/v1/chat"])},
                    }
                )
            if plan != "business_jpy" and daily_calls and day % 7 == 0:
                gb = Decimal(rng.randrange(50, 900)) / 100
                events.append(
                    {
                        "transaction_id": f"{subscription}-storage-{day:03d}",
                        "external_subscription_id": subscription,
                        "code": "storage_gb",
                        "timestamp": (midnight + timedelta(hours=12)).isoformat(),
                        "properties": {"gb": str(gb)},
                    }
                )
    resent = [dict(event) for event in rng.sample(events, k=len(events) * 3 // 100)]
    return events + resent
