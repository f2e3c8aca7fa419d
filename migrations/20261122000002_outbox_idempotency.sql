-- Transactional outbox and idempotency records.

-- Events and work items committed with the command that caused them. The
-- relay publishes unpublished rows in id order (which, per aggregate, is
-- commit order: a command locks its order row before it appends) and marks
-- them; the janitor deletes published rows after a retention period.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    subject        text NOT NULL,
    headers        jsonb NOT NULL,
    payload        bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wakes the relay when a command commits (NOTIFY is delivered at commit).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- The record of every Idempotency-Key, written in the command's transaction.
CREATE TABLE idempotency_keys (
    caller         text NOT NULL,
    key            text NOT NULL,
    request_hash   bytea NOT NULL,
    status_code    smallint NOT NULL,
    response_body  bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
