-- Workers: processed jobs, rendered receipts and dead-letter redrives.

-- A job's effect is recorded here once it happened; a redelivered job that
-- finds its row does nothing again.
CREATE TABLE job_runs (
    job_id        uuid PRIMARY KEY,
    kind          text NOT NULL,
    merchant_id   uuid,
    attempts      integer NOT NULL,
    completed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_runs_completed ON job_runs (completed_at);

-- Receipts delivered, one row per job and channel: a retried job skips the
-- channels already delivered.
CREATE TABLE receipts (
    job_id        uuid NOT NULL,
    channel       text NOT NULL CHECK (channel IN ('email', 'sms')),
    order_id      uuid NOT NULL,
    merchant_id   uuid NOT NULL,
    stored_at     text NOT NULL,
    delivered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, channel)
);
CREATE INDEX receipts_order ON receipts (order_id);

-- Who redrove which dead letter, and when.
CREATE TABLE dead_letter_redrives (
    id            bigserial PRIMARY KEY,
    dlq_seq       bigint NOT NULL,
    job_id        uuid,
    kind          text NOT NULL,
    redriven_by   text NOT NULL,
    redriven_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_redrives_seq ON dead_letter_redrives (dlq_seq);
