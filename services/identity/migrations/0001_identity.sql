-- Accounts, their sessions (refresh-token families) and their addresses.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Stored normalized (trimmed, lower case); the index makes it unique regardless of case anyway.
    email         text NOT NULL,
    password_hash text NOT NULL,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('customer', 'seller', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- One row per refresh token ever issued. A family is one login's chain of
-- rotations; presenting a used token revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    family_id  uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

CREATE TABLE addresses (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL,
    line1       text NOT NULL,
    line2       text,
    city        text NOT NULL,
    postal_code text NOT NULL,
    country     text NOT NULL,
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX addresses_user ON addresses (user_id, created_at);
-- At most one default address per user.
CREATE UNIQUE INDEX addresses_one_default ON addresses (user_id) WHERE is_default;
