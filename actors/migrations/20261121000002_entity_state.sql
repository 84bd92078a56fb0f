-- Entity state, one row per entity, written by the group-commit writer.
CREATE TABLE IF NOT EXISTS entity_state (
    kind        TEXT        NOT NULL,
    id          TEXT        NOT NULL,
    -- The entity's event count: its last event's `seq`.
    version     BIGINT      NOT NULL,
    state       JSONB       NOT NULL,
    -- A durable deadline (an order's checkout deadline), fired by the sweeper.
    deadline_at TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, id)
);

CREATE INDEX IF NOT EXISTS entity_state_deadlines ON entity_state (kind, deadline_at) WHERE deadline_at IS NOT NULL;
