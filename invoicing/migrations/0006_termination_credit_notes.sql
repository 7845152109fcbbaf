-- Termination credit notes (invoicing/termination_credits.py): every close looks up the
-- subscription fees of the subscriptions that ended, by subscription. Index that lookup
-- so it does not scan every fee ever billed.
CREATE INDEX invoice_fees_subscription_fees_idx
    ON invoice_fees (external_subscription_id, period_end)
    WHERE kind = 'subscription';
