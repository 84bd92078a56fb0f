-- Categories, products, and the read-model columns other services feed.

CREATE TABLE categories (
    id         uuid PRIMARY KEY,
    parent_id  uuid REFERENCES categories (id),
    name       text NOT NULL,
    -- From the root down to this category, itself last: a subtree is every
    -- row whose path contains the subtree's root.
    path       uuid[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Siblings have distinct names, whatever their case.
CREATE UNIQUE INDEX categories_sibling_name
    ON categories (coalesce(parent_id, '00000000-0000-0000-0000-000000000000'), lower(name));

CREATE TABLE products (
    -- UUIDv7: ordered by creation, so "newest" is the primary key backwards.
    id            uuid PRIMARY KEY,
    seller_id     uuid NOT NULL,
    name          text NOT NULL,
    description   text NOT NULL,
    price_amount  bigint NOT NULL CHECK (price_amount >= 0),
    currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    category_id   uuid REFERENCES categories (id),
    -- The category's path, copied: the subtree filter is one GIN lookup.
    category_path uuid[] NOT NULL DEFAULT '{}',
    version       bigint NOT NULL,
    -- Read model of inventory's stock (inventory.stock_changed), newest `seq` wins.
    on_hand       integer NOT NULL DEFAULT 0,
    reserved      integer NOT NULL DEFAULT 0,
    available     integer GENERATED ALWAYS AS (on_hand - reserved) STORED,
    stock_seq     bigint NOT NULL DEFAULT 0,
    -- Read model of reviews: unrated products average 0 and sort last.
    rating_avg    double precision NOT NULL DEFAULT 0,
    rating_count  integer NOT NULL DEFAULT 0,
    -- English stemming; the name weighs more than the description.
    search        tsvector GENERATED ALWAYS AS (
                      setweight(to_tsvector('english', name), 'A')
                      || setweight(to_tsvector('english', description), 'B')
                  ) STORED,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz
);

-- Every search reads only products on sale, so every index is partial.
CREATE INDEX products_search   ON products USING gin (search) WHERE deleted_at IS NULL;
CREATE INDEX products_category ON products USING gin (category_path) WHERE deleted_at IS NULL;
CREATE INDEX products_price    ON products (price_amount, id) WHERE deleted_at IS NULL;
CREATE INDEX products_newest   ON products (id) WHERE deleted_at IS NULL;
CREATE INDEX products_rating   ON products (rating_avg, id) WHERE deleted_at IS NULL;
CREATE INDEX products_seller   ON products (seller_id, id) WHERE deleted_at IS NULL;
CREATE INDEX products_in_stock ON products (id) WHERE deleted_at IS NULL AND available > 0;
