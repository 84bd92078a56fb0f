-- Three statuses, and a recovery order that cannot starve.
--
-- `awaiting_placement`: the stock was held (inventory.reserved) before the
-- placement was seen; the row has no order details until order.placed
-- brings them and starts the authorization.
-- `void_failed`, `refund_failed`: the provider refused a compensation for
-- good; nothing is retried and an operator must look.

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN (
    'awaiting_placement', 'awaiting_stock', 'authorizing', 'authorized', 'failed', 'capturing', 'captured',
    'capture_failed', 'voiding', 'voided', 'void_failed', 'refunding', 'refunded', 'refund_failed', 'cancelled'));

ALTER TABLE payments DROP CONSTRAINT payments_check;
ALTER TABLE payments ADD CONSTRAINT payments_ordered_check CHECK (
    status IN ('cancelled', 'awaiting_placement')
    OR (customer_id IS NOT NULL AND amount IS NOT NULL AND currency IS NOT NULL AND payment_method IS NOT NULL));

-- When recovery last asked the provider about an open attempt. Recovery
-- takes the attempts asked least recently (never asked first), so attempts
-- the provider keeps answering "pending" cannot crowd newer ones out.
ALTER TABLE provider_attempts ADD COLUMN checked_at timestamptz;
DROP INDEX provider_attempts_open;
CREATE INDEX provider_attempts_open ON provider_attempts (checked_at NULLS FIRST, started_at)
    WHERE status IN ('started', 'unknown');
