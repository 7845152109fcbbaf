"""The one place billhouse talks to Stripe, through the official ``stripe`` library.

``StripeGateway`` wraps a ``stripe.StripeClient`` whose API base is configurable
(``api_base``: Stripe itself by default, a ``localstripe`` server in tests) and answers
in billhouse's terms: ``ChargeResult`` says whether a PaymentIntent succeeded, failed
(with Stripe's code and message) or is still processing. Card declines are results,
not exceptions; only a transport or configuration problem raises ``StripeGatewayError``.

Charges are PaymentIntents created and confirmed in one call (``confirm=True``,
``off_session=True``) with a caller-chosen idempotency key and metadata naming the
billhouse attempt, so ``find_payment_intent`` can recover an attempt whose answer was
lost (the collector died after Stripe charged and before the ledger recorded it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import stripe

from invoicing.errors import InvoicingError

__all__ = [
    "ATTEMPT_METADATA_KEY",
    "ChargeResult",
    "RefundResult",
    "StripeGateway",
    "StripeGatewayError",
]

# Metadata key on every PaymentIntent billhouse creates: the attempt's idempotency key.
ATTEMPT_METADATA_KEY = "billhouse_attempt"


class StripeGatewayError(InvoicingError):
    """Stripe could not be reached or refused a request for a reason other than a decline."""


@dataclass(frozen=True)
class ChargeResult:
    status: str  # "succeeded" | "failed" | "processing"
    payment_intent_id: str | None
    charge_id: str | None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class RefundResult:
    status: str  # "succeeded" | "failed" | "pending"
    refund_id: str | None
    failure_reason: str | None = None


class StripeGateway:
    """Stripe customers, payment methods and off-session PaymentIntents."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 2,
    ) -> None:
        base_addresses: Any = {"api": api_base.rstrip("/")} if api_base else {}
        self.api_base = api_base
        self.client = stripe.StripeClient(
            api_key, base_addresses=base_addresses, max_network_retries=max_network_retries
        )

    @classmethod
    def from_env(cls) -> StripeGateway:
        """``STRIPE_API_KEY`` (required) and ``STRIPE_API_BASE`` (optional)."""
        api_key = os.environ.get("STRIPE_API_KEY")
        if not api_key:
            raise StripeGatewayError("STRIPE_API_KEY is not set")
        return cls(api_key, api_base=os.environ.get("STRIPE_API_BASE") or None)

    # -- customers ----------------------------------------------------------------

    def create_customer(self, external_customer_id: str, name: str | None = None) -> str:
        """Create a Stripe customer for a billhouse customer; return its ``cus_`` id."""
        params: dict[str, Any] = {"metadata": {"external_customer_id": external_customer_id}}
        if name:
            params["name"] = name
        customer = self._call(
            self.client.v1.customers.create,
            params,
            {"idempotency_key": f"billhouse-customer-{external_customer_id}"},
        )
        return str(customer.id)

    def attach_payment_method(self, stripe_customer_id: str, payment_method_id: str) -> None:
        """Attach the payment method to the customer (no-op if already attached)."""
        method = self._call(self.client.v1.payment_methods.retrieve, payment_method_id)
        if getattr(method, "customer", None) == stripe_customer_id:
            return
        self._call(
            self.client.v1.payment_methods.attach,
            payment_method_id,
            {"customer": stripe_customer_id},
        )

    def create_card_payment_method(self, number: str, exp_month: int = 12, exp_year: int = 2034) -> str:
        """A card payment method from raw test card details (test mode and localstripe only)."""
        method = self._call(
            self.client.v1.payment_methods.create,
            {
                "type": "card",
                "card": {"number": number, "exp_month": exp_month, "exp_year": exp_year, "cvc": "123"},
            },
        )
        return str(method.id)

    # -- payments -----------------------------------------------------------------

    def charge(
        self,
        *,
        amount_cents: int,
        currency: str,
        stripe_customer_id: str,
        payment_method_id: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ChargeResult:
        """Create and confirm an off-session PaymentIntent; a decline is a failed result."""
        params: dict[str, Any] = {
            "amount": amount_cents,
            "currency": currency.lower(),
            "customer": stripe_customer_id,
            "payment_method": payment_method_id,
            "confirm": True,
            "off_session": True,
            "metadata": {**metadata, ATTEMPT_METADATA_KEY: idempotency_key},
        }
        try:
            intent = self.client.v1.payment_intents.create(
                params, {"idempotency_key": idempotency_key}
            )
        except stripe.CardError as exc:
            return _declined(exc)
        except stripe.StripeError as exc:
            raise StripeGatewayError(f"Stripe refused the PaymentIntent: {exc}") from exc
        return _result(intent)

    def retrieve_payment_intent(self, payment_intent_id: str) -> ChargeResult:
        """The current state of a PaymentIntent billhouse created."""
        return _result(self._call(self.client.v1.payment_intents.retrieve, payment_intent_id))

    def find_payment_intent(
        self, *, stripe_customer_id: str, idempotency_key: str, created_after: datetime
    ) -> ChargeResult | None:
        """The PaymentIntent of an attempt whose answer was lost, or None if it made none.

        Looks through the customer's charges created after ``created_after`` (a PaymentIntent
        confirmed off-session always makes a charge, succeeded or failed) for one whose
        PaymentIntent carries the attempt's key in its metadata.
        """
        charges = self._call(
            self.client.v1.charges.list,
            {
                "customer": stripe_customer_id,
                "created": {"gt": int(created_after.timestamp())},
                "limit": 100,
            },
        )
        seen: set[str] = set()
        for charge in charges.auto_paging_iter():
            intent_id = _id(getattr(charge, "payment_intent", None))
            if intent_id is None or intent_id in seen:
                continue
            seen.add(intent_id)
            intent = self._call(self.client.v1.payment_intents.retrieve, intent_id)
            if _plain(getattr(intent, "metadata", None)).get(ATTEMPT_METADATA_KEY) == idempotency_key:
                return _result(intent)
        return None

    def refund(
        self, *, payment_intent_id: str, amount_cents: int, idempotency_key: str, metadata: Mapping[str, str]
    ) -> RefundResult:
        """Refund part or all of a succeeded PaymentIntent; a refusal is a failed result."""
        try:
            refund = self.client.v1.refunds.create(
                {
                    "payment_intent": payment_intent_id,
                    "amount": amount_cents,
                    "metadata": {**metadata, ATTEMPT_METADATA_KEY: idempotency_key},
                },
                {"idempotency_key": idempotency_key},
            )
        except stripe.InvalidRequestError as exc:
            return RefundResult("failed", None, str(exc.user_message or exc))
        except stripe.StripeError as exc:
            raise StripeGatewayError(f"Stripe refused the refund: {exc}") from exc
        return _refund_result(refund)

    def find_refund(self, *, payment_intent_id: str, idempotency_key: str) -> RefundResult | None:
        """The refund made under this key for the PaymentIntent, or None if none was."""
        refunds = self._call(
            self.client.v1.refunds.list, {"payment_intent": payment_intent_id, "limit": 100}
        )
        for refund in refunds.auto_paging_iter():
            if _plain(getattr(refund, "metadata", None)).get(ATTEMPT_METADATA_KEY) == idempotency_key:
                return _refund_result(refund)
        return None

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except stripe.StripeError as exc:
            raise StripeGatewayError(f"Stripe: {exc}") from exc


def _id(value: Any) -> str | None:
    """An id from a field Stripe returns either as an id or as an expanded object."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value.id)


def _plain(value: Any) -> dict[str, Any]:
    """A Stripe sub-object (StripeObject, dict or None) as a plain dict."""
    if value is None:
        return {}
    return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def _result(intent: Any) -> ChargeResult:
    charge_id = _id(getattr(intent, "latest_charge", None))
    if intent.status == "succeeded":
        return ChargeResult("succeeded", intent.id, charge_id)
    if intent.status == "processing":
        return ChargeResult("processing", intent.id, charge_id)
    error = _plain(getattr(intent, "last_payment_error", None))
    code = error.get("decline_code") or error.get("code")
    message = error.get("message")
    if intent.status == "requires_action":
        code, message = "authentication_required", "the payment method needs the customer present"
    return ChargeResult(
        "failed",
        intent.id,
        charge_id,
        code or f"payment_intent_{intent.status}",
        message or f"PaymentIntent is {intent.status}",
    )


def _refund_result(refund: Any) -> RefundResult:
    status = {"succeeded": "succeeded", "pending": "pending", "requires_action": "pending"}.get(
        refund.status, "failed"
    )
    reason = None if status != "failed" else str(getattr(refund, "failure_reason", None) or refund.status)
    return RefundResult(status, refund.id, reason)


def _declined(exc: stripe.CardError) -> ChargeResult:
    error = exc.error
    intent = getattr(error, "payment_intent", None)
    charge = getattr(error, "charge", None)
    code = getattr(error, "decline_code", None) or exc.code or "card_declined"
    message = getattr(error, "message", None) or exc.user_message or str(exc)
    return ChargeResult("failed", _id(intent), _id(charge), str(code), str(message))
