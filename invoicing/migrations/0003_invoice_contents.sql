-- 0003 invoice contents: coupons, taxes, prepaid-credit wallets, add-ons, credit notes,
-- and what each finalized invoice took from them.
--
-- Names follow Lago's API (coupons, applied_coupons, taxes, wallets,
-- wallet_transactions, add_ons, credit_notes). Money is integer minor units (bigint
-- *_cents); rates, credits and precise (unrounded) amounts are exact numeric. Every
-- write that a caller may retry carries an idempotency key (UNIQUE). The rows an
-- invoice took at finalization (applied coupons, taxes, credits) are written in the
-- finalizing transaction and never change afterwards.

-- Invoice totals in the documented order:
--   sub_total - coupons + taxes - credit-note credits - prepaid credits = total (due).
ALTER TABLE invoices
    ADD COLUMN invoice_type text NOT NULL DEFAULT 'subscription'
        CHECK (invoice_type IN ('subscription', 'one_off')),
    ADD COLUMN due_date date,
    ADD COLUMN coupons_cents bigint NOT NULL DEFAULT 0 CHECK (coupons_cents >= 0),
    ADD COLUMN taxes_cents bigint NOT NULL DEFAULT 0 CHECK (taxes_cents >= 0),
    ADD COLUMN credit_notes_cents bigint NOT NULL DEFAULT 0 CHECK (credit_notes_cents >= 0),
    ADD COLUMN prepaid_credits_cents bigint NOT NULL DEFAULT 0 CHECK (prepaid_credits_cents >= 0),
    ADD CONSTRAINT invoices_totals_add_up CHECK (
        total_cents = sub_total_cents - coupons_cents + taxes_cents
                      - credit_notes_cents - prepaid_credits_cents
    ),
    ADD CONSTRAINT invoices_total_not_negative CHECK (total_cents >= 0);

UPDATE invoices SET due_date = issuing_date WHERE due_date IS NULL;

-- The contents columns of an issued invoice are frozen like the rest of it (0001's
-- guard lists its own columns; this one adds the columns of this migration).
CREATE FUNCTION invoices_guard_contents() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'draft' AND
       (NEW.invoice_type, NEW.due_date, NEW.coupons_cents, NEW.taxes_cents,
        NEW.credit_notes_cents, NEW.prepaid_credits_cents)
       IS DISTINCT FROM
       (OLD.invoice_type, OLD.due_date, OLD.coupons_cents, OLD.taxes_cents,
        OLD.credit_notes_cents, OLD.prepaid_credits_cents) THEN
        RAISE EXCEPTION 'invoice % is % and cannot change', OLD.number, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER invoices_guard_contents
    BEFORE UPDATE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_guard_contents();

-- Fees: add-on fees have no subscription or plan; the charge and add-on they come
-- from (for charge- and add-on-level taxes), the rating details (graduated tiers),
-- their unrounded share of the invoice's coupons and their unrounded taxes.
ALTER TABLE invoice_fees
    ALTER COLUMN external_subscription_id DROP NOT NULL,
    ALTER COLUMN plan_code DROP NOT NULL,
    ADD COLUMN charge_id text,
    ADD COLUMN add_on_code text,
    ADD COLUMN details jsonb,
    ADD COLUMN precise_coupons_amount_cents numeric NOT NULL DEFAULT 0
        CHECK (precise_coupons_amount_cents >= 0),
    ADD COLUMN precise_taxes_amount_cents numeric NOT NULL DEFAULT 0
        CHECK (precise_taxes_amount_cents >= 0),
    ADD CONSTRAINT invoice_fees_subscription_fees_have_a_plan
        CHECK (kind = 'add_on' OR (external_subscription_id IS NOT NULL AND plan_code IS NOT NULL)),
    ADD CONSTRAINT invoice_fees_add_on_fees_have_an_add_on
        CHECK (kind <> 'add_on' OR add_on_code IS NOT NULL);

-- Rows written by finalization only: inserted in the finalizing transaction, frozen.
CREATE FUNCTION invoice_contents_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    inv record;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION '% rows of an issued invoice cannot change', TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END IF;
    SELECT status, number, finalized_at INTO inv FROM invoices WHERE id = NEW.invoice_id;
    IF inv.status <> 'draft' AND inv.finalized_at <> now() THEN
        RAISE EXCEPTION 'invoice % is % and its % cannot change', inv.number, inv.status, TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;

-- -- taxes --------------------------------------------------------------------------

CREATE TABLE taxes (
    code text PRIMARY KEY CHECK (code <> ''),
    name text NOT NULL,
    rate numeric NOT NULL CHECK (rate >= 0 AND rate <= 100),  -- percent
    description text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Where a tax applies. The most specific level with at least one tax wins for a fee:
-- charge (or add-on) -> plan -> customer -> billing entity.
CREATE TABLE tax_attachments (
    tax_code text NOT NULL REFERENCES taxes (code) ON DELETE CASCADE,
    target_type text NOT NULL
        CHECK (target_type IN ('billing_entity', 'customer', 'plan', 'charge', 'add_on')),
    target_id text NOT NULL CHECK (target_id <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_type, target_id, tax_code)
);

-- Taxes per rate on an invoice: the base and amount printed on the invoice.
CREATE TABLE invoice_applied_taxes (
    invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    tax_code text NOT NULL,
    tax_name text NOT NULL,
    tax_rate numeric NOT NULL,
    taxable_base_cents bigint NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    PRIMARY KEY (invoice_id, tax_code)
);

CREATE TRIGGER invoice_applied_taxes_frozen
    BEFORE INSERT OR UPDATE OR DELETE ON invoice_applied_taxes
    FOR EACH ROW EXECUTE FUNCTION invoice_contents_frozen();

-- Unrounded tax of each fee per rate (the invoice's tax is their rounded sum).
CREATE TABLE fee_applied_taxes (
    invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    fee_key text NOT NULL,
    tax_code text NOT NULL,
    tax_rate numeric NOT NULL,
    precise_amount_cents numeric NOT NULL,
    PRIMARY KEY (invoice_id, fee_key, tax_code),
    FOREIGN KEY (invoice_id, fee_key) REFERENCES invoice_fees (invoice_id, fee_key)
);

CREATE TRIGGER fee_applied_taxes_frozen
    BEFORE INSERT OR UPDATE OR DELETE ON fee_applied_taxes
    FOR EACH ROW EXECUTE FUNCTION invoice_contents_frozen();

-- -- coupons ------------------------------------------------------------------------

CREATE TABLE coupons (
    code text PRIMARY KEY CHECK (code <> ''),
    name text NOT NULL,
    coupon_type text NOT NULL CHECK (coupon_type IN ('fixed_amount', 'percentage')),
    amount_cents bigint CHECK (amount_cents > 0),
    amount_currency char(3) CHECK (amount_currency ~ '^[A-Z]{3}$'),
    percentage_rate numeric CHECK (percentage_rate > 0 AND percentage_rate <= 100),
    frequency text NOT NULL CHECK (frequency IN ('once', 'recurring', 'forever')),
    frequency_duration integer CHECK (frequency_duration > 0),
    reusable boolean NOT NULL DEFAULT false,
    expiration_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((coupon_type = 'fixed_amount') = (amount_cents IS NOT NULL AND amount_currency IS NOT NULL)),
    CHECK ((coupon_type = 'percentage') = (percentage_rate IS NOT NULL)),
    CHECK ((frequency = 'recurring') = (frequency_duration IS NOT NULL))
);

-- A coupon applied to a customer, with its (possibly overridden) terms and what is
-- left of it. Applied coupons are used oldest first (position).
CREATE TABLE applied_coupons (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position bigserial UNIQUE,
    idempotency_key text NOT NULL UNIQUE,
    coupon_code text NOT NULL REFERENCES coupons (code),
    external_customer_id text NOT NULL,
    coupon_type text NOT NULL CHECK (coupon_type IN ('fixed_amount', 'percentage')),
    amount_cents bigint CHECK (amount_cents > 0),
    amount_currency char(3),
    percentage_rate numeric CHECK (percentage_rate > 0 AND percentage_rate <= 100),
    frequency text NOT NULL CHECK (frequency IN ('once', 'recurring', 'forever')),
    frequency_duration integer CHECK (frequency_duration > 0),
    -- what is left: money of a `once` fixed coupon, invoices of a `recurring` one
    amount_cents_remaining bigint CHECK (amount_cents_remaining >= 0),
    frequency_duration_remaining integer CHECK (frequency_duration_remaining >= 0),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'terminated')),
    created_at timestamptz NOT NULL DEFAULT now(),
    terminated_at timestamptz,
    CHECK ((status = 'terminated') = (terminated_at IS NOT NULL))
);

CREATE INDEX applied_coupons_customer_idx ON applied_coupons (external_customer_id, status, position);

CREATE TABLE invoice_applied_coupons (
    invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    applied_coupon_id uuid NOT NULL REFERENCES applied_coupons (id),
    coupon_code text NOT NULL,
    coupon_name text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    position integer NOT NULL,
    PRIMARY KEY (invoice_id, applied_coupon_id)
);

CREATE TRIGGER invoice_applied_coupons_frozen
    BEFORE INSERT OR UPDATE OR DELETE ON invoice_applied_coupons
    FOR EACH ROW EXECUTE FUNCTION invoice_contents_frozen();

-- -- add-ons ------------------------------------------------------------------------

CREATE TABLE add_ons (
    code text PRIMARY KEY CHECK (code <> ''),
    name text NOT NULL,
    invoice_display_name text,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    amount_currency char(3) NOT NULL CHECK (amount_currency ~ '^[A-Z]{3}$'),
    description text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- -- customers' invoicing settings -------------------------------------------------

CREATE TABLE customer_invoicing_settings (
    external_customer_id text PRIMARY KEY CHECK (external_customer_id <> ''),
    -- days between issuing date and due date (Lago's net_payment_term; default 0)
    net_payment_term integer NOT NULL DEFAULT 0 CHECK (net_payment_term >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- -- wallets (prepaid credits) -----------------------------------------------------

CREATE TABLE wallets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_customer_id text NOT NULL,
    name text,
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    rate_amount numeric NOT NULL CHECK (rate_amount > 0),  -- major units per credit
    credits_balance numeric NOT NULL DEFAULT 0 CHECK (credits_balance >= 0),
    consumed_credits numeric NOT NULL DEFAULT 0 CHECK (consumed_credits >= 0),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'terminated')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    terminated_at timestamptz
);

-- One active wallet per customer.
CREATE UNIQUE INDEX wallets_one_active_per_customer
    ON wallets (external_customer_id) WHERE status = 'active';

-- The wallet's balance history: every movement with the balance after it.
CREATE TABLE wallet_transactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    position bigserial UNIQUE,
    wallet_id uuid NOT NULL REFERENCES wallets (id),
    idempotency_key text NOT NULL UNIQUE,
    transaction_type text NOT NULL CHECK (transaction_type IN ('inbound', 'outbound')),
    -- top_up: paid or granted credits; invoice: consumed by an invoice;
    -- invoice_voided: given back when that invoice was voided
    source text NOT NULL CHECK (source IN ('top_up', 'invoice', 'invoice_voided')),
    paid_credits numeric NOT NULL DEFAULT 0 CHECK (paid_credits >= 0),
    granted_credits numeric NOT NULL DEFAULT 0 CHECK (granted_credits >= 0),
    credits numeric NOT NULL CHECK (credits > 0),
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    balance_after numeric NOT NULL CHECK (balance_after >= 0),
    invoice_id uuid REFERENCES invoices (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (source <> 'top_up' OR credits = paid_credits + granted_credits),
    CHECK (source = 'top_up' OR invoice_id IS NOT NULL)
);

CREATE INDEX wallet_transactions_wallet_idx ON wallet_transactions (wallet_id, position);

-- -- credit notes -------------------------------------------------------------------

CREATE TABLE credit_notes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL REFERENCES invoices (id),
    -- n-th credit note of its invoice; number = <invoice number>-CN<nnn>
    sequential_id integer NOT NULL CHECK (sequential_id > 0),
    number text NOT NULL UNIQUE,
    idempotency_key text NOT NULL UNIQUE,
    external_customer_id text NOT NULL,
    currency char(3) NOT NULL,
    reason text NOT NULL
        CHECK (reason IN ('duplicated_charge', 'product_unsatisfactory', 'order_change',
                          'order_cancellation', 'fraudulent_charge', 'other')),
    description text,
    -- total = refund + credit; taxes_amount_cents is the tax part of the total
    total_amount_cents bigint NOT NULL CHECK (total_amount_cents > 0),
    taxes_amount_cents bigint NOT NULL CHECK (taxes_amount_cents >= 0),
    refund_amount_cents bigint NOT NULL CHECK (refund_amount_cents >= 0),
    credit_amount_cents bigint NOT NULL CHECK (credit_amount_cents >= 0),
    -- what is left of the credit part for the customer's next invoices
    balance_amount_cents bigint NOT NULL CHECK (balance_amount_cents >= 0),
    refund_status text CHECK (refund_status IN ('pending', 'succeeded', 'failed')),
    status text NOT NULL DEFAULT 'finalized' CHECK (status IN ('finalized', 'voided')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (invoice_id, sequential_id),
    CHECK (total_amount_cents = refund_amount_cents + credit_amount_cents),
    CHECK (balance_amount_cents <= credit_amount_cents),
    CHECK ((refund_amount_cents > 0) = (refund_status IS NOT NULL))
);

CREATE INDEX credit_notes_customer_idx ON credit_notes (external_customer_id, created_at);

-- Credit-note credits an invoice consumed at finalization.
CREATE TABLE invoice_credit_note_credits (
    invoice_id uuid NOT NULL REFERENCES invoices (id) ON DELETE RESTRICT,
    credit_note_id uuid NOT NULL REFERENCES credit_notes (id),
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    PRIMARY KEY (invoice_id, credit_note_id)
);

CREATE TRIGGER invoice_credit_note_credits_frozen
    BEFORE INSERT OR UPDATE OR DELETE ON invoice_credit_note_credits
    FOR EACH ROW EXECUTE FUNCTION invoice_contents_frozen();
