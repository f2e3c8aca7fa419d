-- Read models, one schema per projection, and the projections' checkpoints.
--
-- Every projection writes only inside its own schema (its SQL uses
-- unqualified names under `SET LOCAL search_path`), so a rebuild can fill a
-- shadow copy of the schema and swap it in atomically by renaming schemas.
-- Every read-model table has a merchant_id, so one tenant can be rebuilt.

CREATE TABLE projection_checkpoints (
    projection      text PRIMARY KEY,
    -- Last stream sequence applied; the read-model writes and this row commit together.
    stream_seq      bigint NOT NULL DEFAULT 0,
    last_event_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Set when the projection met an event it cannot apply; cleared on restart with a fix.
    stalled_seq     bigint,
    stalled_reason  text
);

-- Bills (and the order list, served from the same rows).
CREATE SCHEMA rm_bills;
CREATE TABLE rm_bills.bills (
    order_id       uuid PRIMARY KEY,
    merchant_id    uuid NOT NULL,
    store_id       uuid NOT NULL,
    device_id      uuid,
    currency       char(3) NOT NULL,
    status         text NOT NULL,
    lines          jsonb NOT NULL,
    taxes          jsonb NOT NULL,
    subtotal       bigint NOT NULL,
    tax            bigint NOT NULL,
    total          bigint NOT NULL,
    paid           bigint NOT NULL DEFAULT 0,
    tips           bigint NOT NULL DEFAULT 0,
    refunded       bigint NOT NULL DEFAULT 0,
    business_date  date NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- The order aggregate's version this row reflects (ce-sequence of the last event applied).
    version        bigint NOT NULL
);
CREATE INDEX bills_by_store ON rm_bills.bills (merchant_id, store_id, created_at DESC, order_id DESC);
CREATE INDEX bills_by_merchant ON rm_bills.bills (merchant_id, created_at DESC, order_id DESC);

CREATE TABLE rm_bills.bill_payments (
    payment_id     uuid PRIMARY KEY,
    order_id       uuid NOT NULL,
    merchant_id    uuid NOT NULL,
    method         text NOT NULL,
    status         text NOT NULL,
    capture        text NOT NULL,
    amount         bigint NOT NULL,
    tip            bigint NOT NULL,
    refunded       bigint NOT NULL DEFAULT 0,
    auth_code      text,
    failure_reason text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX bill_payments_order ON rm_bills.bill_payments (order_id);

CREATE TABLE rm_bills.bill_refunds (
    refund_id      uuid PRIMARY KEY,
    payment_id     uuid NOT NULL,
    order_id       uuid NOT NULL,
    merchant_id    uuid NOT NULL,
    amount         bigint NOT NULL,
    reason         text,
    created_at     timestamptz NOT NULL
);
CREATE INDEX bill_refunds_order ON rm_bills.bill_refunds (order_id);

-- Store daily sales: one fact per capture and per refund, summed on read per
-- store, business date and method (bounded by one day's rows, however much
-- history there is).
CREATE SCHEMA rm_sales;
CREATE TABLE rm_sales.captures (
    payment_id     uuid PRIMARY KEY,
    merchant_id    uuid NOT NULL,
    store_id       uuid NOT NULL,
    method         text NOT NULL,
    currency       char(3) NOT NULL,
    business_date  date NOT NULL,
    amount         bigint NOT NULL,
    tip            bigint NOT NULL,
    captured_at    timestamptz NOT NULL
);
CREATE INDEX captures_by_day ON rm_sales.captures (store_id, business_date);

CREATE TABLE rm_sales.refunds (
    refund_id      uuid PRIMARY KEY,
    payment_id     uuid NOT NULL,
    merchant_id    uuid NOT NULL,
    store_id       uuid NOT NULL,
    method         text NOT NULL,
    currency       char(3) NOT NULL,
    business_date  date NOT NULL,
    amount         bigint NOT NULL,
    refunded_at    timestamptz NOT NULL
);
CREATE INDEX refunds_by_day ON rm_sales.refunds (store_id, business_date);

-- Device status.
CREATE SCHEMA rm_devices;
CREATE TABLE rm_devices.device_status (
    device_id      uuid PRIMARY KEY,
    merchant_id    uuid NOT NULL,
    store_id       uuid NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    last_order_id  uuid,
    last_order_at  timestamptz,
    tokens_issued  bigint NOT NULL DEFAULT 0,
    last_token_at  timestamptz
);
