-- 0004 payments and webhooks: Stripe customers, collection and dunning state, payment
-- attempts, and the outgoing-webhook outbox (endpoints, events, deliveries).
--
-- Payments never change an invoice's issued columns: the only invoice column they
-- write is payment_status (allowed by invoices_guard_issued). Everything else about
-- collection lives in the tables below, keyed by invoices(id).

-- The Stripe customer of each billhouse customer and the payment method charged
-- off-session for its invoices.
CREATE TABLE stripe_customers (
    external_customer_id text PRIMARY KEY CHECK (external_customer_id <> ''),
    stripe_customer_id text NOT NULL UNIQUE CHECK (stripe_customer_id ~ '^cus_'),
    default_payment_method_id text
        CHECK (default_payment_method_id IS NULL OR default_payment_method_id <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per issued invoice the collector has taken on. amount_due_cents and
-- due_date are fixed when the row is created (at the first collection run after
-- finalization). state: collecting (an attempt is due at next_attempt_at, or waits
-- for a payment method), succeeded (paid, or nothing was due), exhausted (every
-- scheduled attempt failed), canceled (the invoice was voided). overdue_at is set
-- once, by the first run after the due date while the invoice is unpaid.
CREATE TABLE invoice_collections (
    invoice_id uuid PRIMARY KEY REFERENCES invoices (id) ON DELETE RESTRICT,
    amount_due_cents bigint NOT NULL CHECK (amount_due_cents >= 0),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    due_date date NOT NULL,
    state text NOT NULL DEFAULT 'collecting'
        CHECK (state IN ('collecting', 'succeeded', 'exhausted', 'canceled')),
    next_attempt_at timestamptz,
    first_failed_at timestamptz,
    overdue_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (state = 'collecting' OR next_attempt_at IS NULL)
);

CREATE INDEX invoice_collections_due_idx ON invoice_collections (next_attempt_at)
    WHERE state = 'collecting';

-- One row per charge attempt. The row is committed (status 'started') BEFORE Stripe
-- is called, with the idempotency key sent to Stripe; a collector that died after
-- that point leaves a 'started' row, and the next run reconciles it with Stripe
-- (same key, same amount, same payment method) instead of starting a new attempt.
-- 'processing': Stripe accepted an asynchronous payment whose outcome comes later.
CREATE TABLE payment_attempts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL REFERENCES invoice_collections (invoice_id) ON DELETE RESTRICT,
    attempt_number integer NOT NULL CHECK (attempt_number >= 1),
    idempotency_key text NOT NULL UNIQUE,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    currency char(3) NOT NULL,
    stripe_customer_id text NOT NULL,
    payment_method_id text NOT NULL,
    status text NOT NULL DEFAULT 'started'
        CHECK (status IN ('started', 'processing', 'succeeded', 'failed')),
    payment_intent_id text UNIQUE,
    charge_id text,
    failure_code text,
    failure_message text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (invoice_id, attempt_number),
    CHECK ((status IN ('succeeded', 'failed')) = (finished_at IS NOT NULL)),
    CHECK (status <> 'failed' OR failure_code IS NOT NULL)
);

-- An invoice is paid at most once, and has at most one attempt in flight.
CREATE UNIQUE INDEX payment_attempts_one_success ON payment_attempts (invoice_id)
    WHERE status = 'succeeded';
CREATE UNIQUE INDEX payment_attempts_one_in_flight ON payment_attempts (invoice_id)
    WHERE status IN ('started', 'processing');

-- Receivers of outgoing webhooks. The secret signs every delivery (HMAC-SHA256).
-- event_types NULL: every event type.
CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url text NOT NULL UNIQUE CHECK (url ~ '^https?://'),
    secret text NOT NULL CHECK (length(secret) >= 16),
    event_types text[],
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The outbox: one row per event, written in the transaction of the change it reports,
-- so an event exists if and only if its change committed. id is the event id receivers
-- dedupe by; it never changes across retries. idempotency_key (optional) makes
-- enqueueing the same fact twice a no-op.
CREATE TABLE webhook_events (
    id text PRIMARY KEY CHECK (id ~ '^evt_[0-9a-f]{32}$'),
    -- enqueue order (events of one transaction share created_at)
    position bigserial NOT NULL UNIQUE,
    event_type text NOT NULL CHECK (event_type IN (
        'invoice.created', 'invoice.finalized', 'invoice.payment_succeeded',
        'invoice.payment_failed', 'invoice.overdue', 'credit_note.created',
        'wallet.depleted')),
    object_id text NOT NULL CHECK (object_id <> ''),
    payload jsonb NOT NULL,
    idempotency_key text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_events_object_idx ON webhook_events (object_id, position);

-- One row per event and endpoint subscribed to it when the event was enqueued.
-- pending: due at next_attempt_at; delivered: a 2xx answer; failed: gave up after the
-- last attempt (an operator can set it back to pending).
CREATE TABLE webhook_deliveries (
    event_id text NOT NULL REFERENCES webhook_events (id) ON DELETE RESTRICT,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE RESTRICT,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, endpoint_id),
    CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

-- Refunds of credit notes to the payment method (credit_notes.refund_status 'pending').
-- Like payment attempts, the row is committed (status 'started') before Stripe is
-- called with its idempotency key, and a 'started' row is reconciled with Stripe on the
-- next run. One refund per credit note, against the invoice's successful PaymentIntent.
CREATE TABLE credit_note_refunds (
    credit_note_id uuid PRIMARY KEY REFERENCES credit_notes (id) ON DELETE RESTRICT,
    idempotency_key text NOT NULL UNIQUE,
    payment_intent_id text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    status text NOT NULL DEFAULT 'started' CHECK (status IN ('started', 'succeeded', 'failed')),
    stripe_refund_id text UNIQUE,
    failure_reason text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((status = 'started') = (finished_at IS NULL))
);
