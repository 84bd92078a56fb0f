-- Orders live in `entity_state` (kind 'order', one JSONB row each, written by
-- the group-commit writer). These indexes serve the listings, newest first:
-- a customer's orders, a seller's orders (any line of theirs), everyone's.
CREATE INDEX IF NOT EXISTS orders_by_customer ON entity_state
    ((state ->> 'customer_id'), ((state ->> 'placed_at_micros')::bigint) DESC, id)
    WHERE kind = 'order';
CREATE INDEX IF NOT EXISTS orders_by_seller ON entity_state USING gin ((state -> 'seller_ids'))
    WHERE kind = 'order';
CREATE INDEX IF NOT EXISTS orders_newest ON entity_state
    (((state ->> 'placed_at_micros')::bigint) DESC, id)
    WHERE kind = 'order';
