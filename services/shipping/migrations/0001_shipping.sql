-- Shipments (one per confirmed order) and the orders cancelled before shipping saw them confirmed.

-- Tracking numbers' serials: unique by construction, eight digits (UPU S10).
CREATE SEQUENCE tracking_serials AS integer MINVALUE 1 MAXVALUE 99999999 NO CYCLE;

CREATE TABLE shipments (
    -- UUIDv5 of the order id: an order can have no second shipment.
    id              uuid PRIMARY KEY,
    order_id        uuid NOT NULL UNIQUE,
    status          text NOT NULL CHECK (status IN ('created', 'shipped', 'delivered', 'cancelled')),
    -- The `seq` of the shipping.* event that announced the status.
    version         bigint NOT NULL,
    carrier         text NOT NULL,
    tracking_number text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL,
    shipped_at      timestamptz,
    delivered_at    timestamptz,
    cancelled_at    timestamptz,
    updated_at      timestamptz NOT NULL,
    CHECK (status <> 'shipped' OR shipped_at IS NOT NULL),
    CHECK (status <> 'delivered' OR (shipped_at IS NOT NULL AND delivered_at IS NOT NULL)),
    CHECK (status <> 'cancelled' OR (cancelled_at IS NOT NULL AND shipped_at IS NULL))
);

-- An order.cancelled seen before its order.confirmed: the confirmation, when
-- it comes (out of order, or replayed), creates no shipment.
CREATE TABLE cancelled_first (
    order_id     uuid PRIMARY KEY,
    cancelled_at timestamptz NOT NULL
);
