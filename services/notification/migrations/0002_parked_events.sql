-- Payment and shipping events of an order whose customer is not known yet
-- (its order.placed is still behind in the order stream, e.g. after
-- downtime). Each is parked here in the transaction that records its inbox
-- row, and acked; the transaction that remembers the order's customer takes
-- them back, oldest first, produces their notifications and deletes them.
-- Nothing waits in the consumer loop's backoff and nothing is dead-lettered
-- for an ordinary race between streams.
CREATE TABLE parked_events (
    event_id    uuid PRIMARY KEY,
    order_id    uuid NOT NULL,
    -- The envelope's `type` and `schema`: how `data` is decoded back.
    event_type  text NOT NULL,
    schema      integer NOT NULL,
    data        jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    parked_at   timestamptz NOT NULL
);
CREATE INDEX parked_events_order ON parked_events (order_id, occurred_at);
