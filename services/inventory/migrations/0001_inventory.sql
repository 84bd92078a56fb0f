-- Stock per product, reservations per order, and every movement.

CREATE TABLE stock (
    product_id  uuid PRIMARY KEY,
    seller_id   uuid NOT NULL,
    on_hand     integer NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved    integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    -- The invariant that makes overselling impossible, whatever the code does.
    CHECK (reserved <= on_hand),
    -- The row's version: the `seq` of its inventory.stock_changed events.
    version     bigint NOT NULL,
    delisted_at timestamptz,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE reservations (
    order_id    uuid PRIMARY KEY,
    status      text NOT NULL
                CHECK (status IN ('held', 'rejected', 'released', 'shipped', 'cancelled_unseen')),
    -- The reservation's version: the `seq` of its inventory.* saga events.
    version     bigint NOT NULL,
    confirmed   boolean NOT NULL DEFAULT false,
    -- The backstop: an unconfirmed hold is released after this.
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX reservations_backstop ON reservations (expires_at) WHERE status = 'held' AND NOT confirmed;

CREATE TABLE reservation_lines (
    order_id   uuid NOT NULL REFERENCES reservations (order_id),
    product_id uuid NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

-- Every change of a stock row: who or what changed it, why, by how much.
CREATE TABLE movements (
    id             uuid PRIMARY KEY,
    product_id     uuid NOT NULL,
    on_hand_delta  integer NOT NULL,
    reserved_delta integer NOT NULL,
    reason         text NOT NULL CHECK (reason IN ('set', 'reserved', 'released', 'expired', 'shipped')),
    actor_id       uuid,
    order_id       uuid,
    at             timestamptz NOT NULL
);
CREATE INDEX movements_product ON movements (product_id, at);
