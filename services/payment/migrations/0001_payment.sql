-- Payments (one per order), every call made to the provider, and the
-- double-entry ledger.

CREATE TABLE payments (
    payment_id       uuid PRIMARY KEY,
    order_id         uuid NOT NULL UNIQUE,
    status           text NOT NULL CHECK (status IN (
                         'awaiting_stock', 'authorizing', 'authorized', 'failed', 'capturing', 'captured',
                         'capture_failed', 'voiding', 'voided', 'refunding', 'refunded', 'cancelled')),
    -- The number of payment.* events emitted: the `seq` of the latest one.
    version          bigint NOT NULL DEFAULT 0,
    -- The order was cancelled while a call was in flight: compensate once its outcome is known.
    cancel_requested boolean NOT NULL DEFAULT false,
    -- What was ordered; absent only for an order whose cancellation came before its placement.
    customer_id      uuid,
    amount           bigint CHECK (amount >= 0),
    currency         text,
    payment_method   text,
    CHECK (status = 'cancelled' OR (customer_id IS NOT NULL AND amount IS NOT NULL AND currency IS NOT NULL
                                    AND payment_method IS NOT NULL)),
    correlation_id   uuid NOT NULL,
    authorization_ref text,
    capture_ref      text,
    failure_reason   text,
    -- When the operation the status names is tried again (a capture, void or
    -- refund whose last call failed); null while a call is in flight or none is due.
    retry_at         timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX payments_retry_due ON payments (retry_at) WHERE retry_at IS NOT NULL;

-- The order's lines, for the ledger's split between sellers and the platform.
CREATE TABLE payment_lines (
    payment_id  uuid NOT NULL REFERENCES payments (payment_id),
    line_no     integer NOT NULL,
    product_id  uuid NOT NULL,
    seller_id   uuid NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  bigint NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (payment_id, line_no)
);

-- Every call to the provider, committed before the call is made, so a crash
-- between the two leaves a row that recovery re-queries by its key.
CREATE TABLE provider_attempts (
    idempotency_key text PRIMARY KEY,
    payment_id      uuid NOT NULL REFERENCES payments (payment_id),
    operation       text NOT NULL CHECK (operation IN ('authorize', 'capture', 'void', 'refund')),
    attempt         integer NOT NULL CHECK (attempt >= 1),
    status          text NOT NULL CHECK (status IN ('started', 'unknown', 'succeeded', 'declined', 'failed')),
    -- The request, whole, so recovery can make it again with the same key.
    amount          bigint NOT NULL CHECK (amount >= 0),
    currency        text NOT NULL,
    payment_method  text,
    target_ref      text,
    -- Where the call came from: the events its outcome emits carry these.
    correlation_id  uuid NOT NULL,
    causation_id    uuid NOT NULL,
    provider_ref    text,
    outcome         text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    UNIQUE (payment_id, operation, attempt)
);
CREATE INDEX provider_attempts_open ON provider_attempts (started_at) WHERE status IN ('started', 'unknown');

-- The ledger: each movement of money is one entry whose lines sum to zero per currency.
CREATE TABLE journal_entries (
    id          uuid PRIMARY KEY,
    order_id    uuid NOT NULL,
    payment_id  uuid NOT NULL REFERENCES payments (payment_id),
    kind        text NOT NULL CHECK (kind IN ('charge', 'sale', 'unsale', 'refund')),
    created_at  timestamptz NOT NULL,
    -- A payment is charged at most once and refunded at most once, whatever the code does.
    UNIQUE (payment_id, kind)
);
CREATE INDEX journal_entries_order ON journal_entries (order_id);

CREATE TABLE journal_lines (
    entry_id  uuid NOT NULL REFERENCES journal_entries (id),
    line_no   integer NOT NULL,
    account   text NOT NULL CHECK (account IN ('customer', 'provider_clearing', 'merchant_payable', 'platform_revenue')),
    party     uuid,
    currency  text NOT NULL,
    -- Signed minor units: + debit, - credit.
    amount    bigint NOT NULL,
    PRIMARY KEY (entry_id, line_no)
);
CREATE INDEX journal_lines_account ON journal_lines (account, party);

-- The last word on balance: at commit, every entry touched must sum to zero
-- per currency, or the transaction fails.
CREATE FUNCTION journal_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM journal_lines WHERE entry_id = NEW.entry_id
        GROUP BY currency HAVING sum(amount) <> 0
    ) THEN
        RAISE EXCEPTION 'journal entry % does not balance', NEW.entry_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER journal_lines_balanced
    AFTER INSERT OR UPDATE ON journal_lines
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION journal_entry_balanced();
