-- Write model: merchants, stores, devices, orders with their payments and refunds.
-- Amounts are bigint minor units of the row's currency; no float column exists.

CREATE TABLE merchants (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    -- How consumption tax is rounded, once per tax rate per order.
    tax_rounding  text NOT NULL DEFAULT 'down' CHECK (tax_rounding IN ('down', 'up', 'half_up')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tax_rates (
    merchant_id   uuid NOT NULL REFERENCES merchants (id),
    category      text NOT NULL,
    rate_bp       integer NOT NULL CHECK (rate_bp BETWEEN 0 AND 10000),
    PRIMARY KEY (merchant_id, category)
);

CREATE TABLE stores (
    id                   uuid PRIMARY KEY,
    merchant_id          uuid NOT NULL REFERENCES merchants (id),
    name                 text NOT NULL,
    time_zone            text NOT NULL,
    -- The sales day ends at this local time (e.g. 04:00 for a bar).
    close_of_day         time NOT NULL DEFAULT '00:00',
    currency             char(3) NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stores_merchant ON stores (merchant_id);

CREATE TABLE devices (
    id             uuid PRIMARY KEY,
    merchant_id    uuid NOT NULL REFERENCES merchants (id),
    store_id       uuid NOT NULL REFERENCES stores (id),
    name           text NOT NULL,
    -- SHA-256 of a 256-bit random secret: the secret itself is never stored.
    secret_hash    bytea NOT NULL,
    active         boolean NOT NULL DEFAULT true,
    -- Tokens issued so far: the sequence of the device's token events.
    token_count    bigint NOT NULL DEFAULT 0,
    last_token_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_store ON devices (store_id);

CREATE TABLE orders (
    id             uuid PRIMARY KEY,
    merchant_id    uuid NOT NULL,
    store_id       uuid NOT NULL,
    device_id      uuid NOT NULL,
    currency       char(3) NOT NULL,
    status         text NOT NULL CHECK (status IN ('open', 'completed', 'canceled')),
    lines          jsonb NOT NULL,
    taxes          jsonb NOT NULL,
    subtotal       bigint NOT NULL CHECK (subtotal >= 0),
    tax            bigint NOT NULL CHECK (tax >= 0),
    total          bigint NOT NULL CHECK (total >= 0),
    customer       jsonb,
    business_date  date NOT NULL,
    version        bigint NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX orders_store_created ON orders (store_id, created_at DESC);

CREATE TABLE payments (
    id             uuid PRIMARY KEY,
    order_id       uuid NOT NULL REFERENCES orders (id),
    merchant_id    uuid NOT NULL,
    store_id       uuid NOT NULL,
    device_id      uuid NOT NULL,
    method         text NOT NULL CHECK (method IN ('card', 'cash', 'qr', 'emoney')),
    status         text NOT NULL CHECK (status IN ('pending', 'authorized', 'captured', 'failed', 'voided')),
    capture_mode   text NOT NULL CHECK (capture_mode IN ('automatic', 'manual')),
    currency       char(3) NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    tip            bigint NOT NULL CHECK (tip >= 0),
    refunded       bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    auth_code      text,
    failure_reason text,
    business_date  date NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- The last line of defence for "never refund more than was captured".
    CONSTRAINT payments_refund_within_captured CHECK (refunded <= amount + tip)
);
CREATE INDEX payments_order ON payments (order_id);

CREATE TABLE refunds (
    id             uuid PRIMARY KEY,
    payment_id     uuid NOT NULL REFERENCES payments (id),
    order_id       uuid NOT NULL REFERENCES orders (id),
    amount         bigint NOT NULL CHECK (amount > 0),
    reason         text,
    status         text NOT NULL CHECK (status IN ('succeeded')),
    created_at     timestamptz NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id);
