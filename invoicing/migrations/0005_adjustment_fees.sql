-- A late event for an already-invoiced period is billed on the customer's next invoice
-- as a fee of kind 'adjustment' (docs/billing-clock.md): the ledger admits that kind.
ALTER TABLE invoice_fees DROP CONSTRAINT invoice_fees_kind_check;
ALTER TABLE invoice_fees ADD CONSTRAINT invoice_fees_kind_check
    CHECK (kind IN ('subscription', 'charge', 'add_on', 'commitment', 'credit', 'adjustment'));
