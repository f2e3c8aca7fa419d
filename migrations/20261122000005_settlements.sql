-- Settlements: per store and business date, versioned, never changed once written.

-- The sales day each capture, void and refund counts toward, fixed when it
-- happened, and the settlement day that booked it (its own day, or the next
-- open day as an adjustment when it arrived after its day was settled).
ALTER TABLE payments ADD COLUMN captured_on date, ADD COLUMN voided_on date, ADD COLUMN settled_on date,
                     ADD COLUMN void_settled_on date;
ALTER TABLE refunds ADD COLUMN business_date date, ADD COLUMN settled_on date;
CREATE INDEX payments_capture_day ON payments (store_id, captured_on);
CREATE INDEX payments_void_day ON payments (store_id, voided_on);
CREATE INDEX refunds_day ON refunds (business_date);

-- Days the scheduler has enqueued (one job per store and business date).
CREATE TABLE settlement_schedule (
    store_id       uuid NOT NULL,
    business_date  date NOT NULL,
    enqueued_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, business_date)
);

CREATE TABLE settlements (
    id             uuid PRIMARY KEY,
    merchant_id    uuid NOT NULL,
    store_id       uuid NOT NULL,
    business_date  date NOT NULL,
    version        integer NOT NULL,
    reason         text NOT NULL CHECK (reason IN ('scheduled', 'rerun')),
    currency       char(3) NOT NULL,
    -- Per payment method: counts and amounts, adjustments included.
    lines          jsonb NOT NULL,
    gross          bigint NOT NULL,
    tips           bigint NOT NULL,
    refunds        bigint NOT NULL,
    net            bigint NOT NULL,
    csv_path       text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (store_id, business_date, version)
);
