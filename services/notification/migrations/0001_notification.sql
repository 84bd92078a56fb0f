-- In-app notifications, the email queue, and what they are addressed by.

-- Whom to write to, learned from identity.user_registered.
CREATE TABLE users (
    user_id    uuid PRIMARY KEY,
    email      text NOT NULL,
    name       text NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Each order's customer, learned from the order's own events: payment and
-- shipping events carry only the order id.
CREATE TABLE orders (
    order_id    uuid PRIMARY KEY,
    customer_id uuid NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE notifications (
    id         uuid PRIMARY KEY,
    -- The event that caused it: one notification per event and recipient,
    -- however often the event is delivered or replayed (also after its
    -- inbox row is pruned).
    event_id   uuid NOT NULL,
    user_id    uuid NOT NULL,
    kind       text NOT NULL,
    title      text NOT NULL,
    body       text NOT NULL,
    order_id   uuid,
    created_at timestamptz NOT NULL,
    read_at    timestamptz,
    CONSTRAINT notifications_event_recipient UNIQUE (event_id, user_id)
);
CREATE INDEX notifications_newest ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL;

-- The email queue: a row per emailed notification, written in the same
-- transaction, sent at least once by the sender (one leader) and marked
-- sent after the sink accepted it. Nothing is ever dropped: a failure
-- backs off (attempts counted, last error kept); an email whose recipient
-- has no known address yet waits for identity.user_registered.
CREATE TABLE emails (
    id              uuid PRIMARY KEY,
    notification_id uuid NOT NULL UNIQUE REFERENCES notifications (id),
    user_id         uuid NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    queued_at       timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    last_error      text,
    sent_at         timestamptz
);
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE sent_at IS NULL;
