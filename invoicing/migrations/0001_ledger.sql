-- 0001 ledger: billing entities' number sequences, invoices and their fees.
--
-- Names follow Lago's API (invoices, fees, billing entities). Money is integer minor
-- units (bigint *_cents) at the invoice boundary; units and unit prices are exact
-- numeric. Later migrations add coupons, taxes, credit notes, payments and wallets;
-- they reference invoices(id) and invoice_fees(id).

-- One row per billing entity: the invoice number prefix and the last number issued.
-- Finalization locks the row (SELECT ... FOR UPDATE) and increments last_number in
-- the same transaction as the invoice insert, so numbers are gapless: a rollback
-- gives the number back. A number, once committed, is never reused.
CREATE TABLE billing_entity_sequences (
    billing_entity text PRIMARY KEY CHECK (billing_entity <> ''),
    invoice_prefix text NOT NULL UNIQUE CHECK (invoice_prefix ~ '^[A-Z0-9][A-Z0-9_-]*$'),
    last_number bigint NOT NULL DEFAULT 0 CHECK (last_number >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invoices (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    billing_entity text NOT NULL REFERENCES billing_entity_sequences (billing_entity),
    -- position in the billing entity's sequence, and the number printed from it
    sequential_id bigint CHECK (sequential_id > 0),
    number text UNIQUE,
    -- idempotency key from the warehouse draft: customer, currency, issuing date
    invoice_key text NOT NULL UNIQUE,
    external_customer_id text NOT NULL,
    customer_name text NOT NULL,
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    currency_exponent smallint NOT NULL CHECK (currency_exponent BETWEEN 0 AND 4),
    issuing_date date NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'finalized', 'voided')),
    payment_status text NOT NULL DEFAULT 'pending'
        CHECK (payment_status IN ('pending', 'succeeded', 'failed')),
    sub_total_cents bigint NOT NULL,
    total_cents bigint NOT NULL,
    finalized_at timestamptz,
    voided_at timestamptz,
    pdf_path text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (billing_entity, sequential_id),
    CHECK (period_start <= period_end),
    -- a non-draft invoice has its number and finalization time
    CHECK (status = 'draft'
           OR (sequential_id IS NOT NULL AND number IS NOT NULL AND finalized_at IS NOT NULL)),
    CHECK ((status = 'voided') = (voided_at IS NOT NULL))
);

CREATE INDEX invoices_customer_idx ON invoices (external_customer_id, issuing_date);

CREATE TABLE invoice_fees (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    -- stable id of the fee from the warehouse: subscription, charge, period
    fee_key text NOT NULL,
    -- Lago's fee types; the warehouse emits subscription and charge fees today
    kind text NOT NULL CHECK (kind IN ('subscription', 'charge', 'add_on', 'commitment', 'credit')),
    external_subscription_id text NOT NULL,
    plan_code text NOT NULL,
    billable_metric_code text,
    charge_model text,
    invoice_display_name text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    units numeric NOT NULL,
    unit_amount numeric NOT NULL,
    precise_amount numeric NOT NULL,
    amount_cents bigint NOT NULL,
    position integer NOT NULL CHECK (position >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (invoice_id, fee_key),
    -- a fee is billed once, on one invoice, ever
    CONSTRAINT invoice_fees_fee_key_billed_once UNIQUE (fee_key),
    CHECK (period_start <= period_end)
);

-- A finalized invoice never changes (corrections are credit notes): only its status
-- (finalized -> voided), payment status and PDF path may move, and it is never deleted.
CREATE FUNCTION invoices_guard_issued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice % is % and cannot be deleted', OLD.number, OLD.status
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' THEN
        IF (NEW.billing_entity, NEW.sequential_id, NEW.number, NEW.invoice_key,
            NEW.external_customer_id, NEW.customer_name, NEW.currency, NEW.currency_exponent,
            NEW.issuing_date, NEW.period_start, NEW.period_end, NEW.sub_total_cents,
            NEW.total_cents, NEW.finalized_at)
           IS DISTINCT FROM
           (OLD.billing_entity, OLD.sequential_id, OLD.number, OLD.invoice_key,
            OLD.external_customer_id, OLD.customer_name, OLD.currency, OLD.currency_exponent,
            OLD.issuing_date, OLD.period_start, OLD.period_end, OLD.sub_total_cents,
            OLD.total_cents, OLD.finalized_at) THEN
            RAISE EXCEPTION 'invoice % is % and cannot change', OLD.number, OLD.status
                USING ERRCODE = 'restrict_violation';
        END IF;
        IF NEW.status = 'draft' OR (OLD.status = 'voided' AND NEW.status <> 'voided') THEN
            RAISE EXCEPTION 'invoice % cannot go from % to %', OLD.number, OLD.status, NEW.status
                USING ERRCODE = 'restrict_violation';
        END IF;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER invoices_guard_issued
    BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_guard_issued();

-- Fees of an issued invoice are frozen. They may be inserted only while the invoice is
-- a draft or in the very transaction that finalizes it (finalized_at = now()).
CREATE FUNCTION invoice_fees_guard_issued() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    inv record;
BEGIN
    SELECT status, number, finalized_at INTO inv
    FROM invoices
    WHERE id = CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
    IF inv.status <> 'draft' AND (TG_OP <> 'INSERT' OR inv.finalized_at <> now()) THEN
        RAISE EXCEPTION 'invoice % is % and its fees cannot change', inv.number, inv.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER invoice_fees_guard_issued
    BEFORE INSERT OR UPDATE OR DELETE ON invoice_fees
    FOR EACH ROW EXECUTE FUNCTION invoice_fees_guard_issued();
