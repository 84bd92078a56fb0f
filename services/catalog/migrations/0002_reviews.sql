-- Reviews, the delivered purchases that allow them, and the rating they add up to.

-- Who received which product, learned from order.delivered: one row per
-- (customer, product), the first delivered order that held it.
CREATE TABLE verified_purchases (
    customer_id  uuid NOT NULL,
    product_id   uuid NOT NULL,
    order_id     uuid NOT NULL,
    delivered_at timestamptz NOT NULL,
    PRIMARY KEY (customer_id, product_id)
);

CREATE TABLE reviews (
    -- UUIDv7: ordered by creation, so "newest" is the key backwards.
    id         uuid PRIMARY KEY,
    product_id uuid NOT NULL REFERENCES products (id),
    author_id  uuid NOT NULL,
    rating     smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL,
    -- One review per customer and product; a second one is a conflict (409).
    CONSTRAINT reviews_one_per_author UNIQUE (product_id, author_id)
);
-- A product's reviews, newest first.
CREATE INDEX reviews_newest ON reviews (product_id, id);

-- The rating read model adds each review's stars to a running integer sum,
-- so the average is always exactly sum / count and never drifts as floats
-- added one by one would. Ratings seeded before this column are carried over.
ALTER TABLE products ADD COLUMN rating_sum bigint NOT NULL DEFAULT 0;
UPDATE products SET rating_sum = round(rating_avg * rating_count) WHERE rating_count > 0;
