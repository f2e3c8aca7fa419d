-- Asynchronous reports: requested by the portal, produced by the workers as CSV files.
CREATE TABLE reports (
    id            uuid PRIMARY KEY,
    merchant_id   uuid NOT NULL,
    store_id      uuid,
    kind          text NOT NULL CHECK (kind IN ('daily_sales', 'transactions')),
    date_from     date NOT NULL,
    date_to       date NOT NULL,
    status        text NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    requested_by  text NOT NULL,
    rows          bigint,
    file_path     text,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
CREATE INDEX reports_merchant ON reports (merchant_id, created_at DESC);
