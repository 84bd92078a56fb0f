-- The messaging tables every service database holds.

-- Events written in the business transaction, published by the relay.
-- `position` orders publishing: an entity's events commit one transaction
-- after another, so their positions rise in commit order per key.
CREATE TABLE IF NOT EXISTS outbox (
    position     BIGSERIAL PRIMARY KEY,
    id           UUID        NOT NULL UNIQUE,
    type_name    TEXT        NOT NULL,
    schema       INTEGER     NOT NULL,
    key          TEXT        NOT NULL,
    seq          BIGINT      NOT NULL,
    payload      BYTEA       NOT NULL,
    traceparent  TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    published_at TIMESTAMPTZ
);

-- The relay's work queue: only unpublished rows.
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (position) WHERE published_at IS NULL;
-- Replay and pruning by time.
CREATE INDEX IF NOT EXISTS outbox_created_at ON outbox (created_at);

-- Events a consumer has applied, recorded in the same transaction as the effect.
CREATE TABLE IF NOT EXISTS inbox (
    consumer     TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at);
