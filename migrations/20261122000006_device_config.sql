-- Device configuration: versioned per scope (merchant, store, device), resolved
-- per device by the device-sync worker, fetched by terminals with a long poll.

-- Every event of a device advances this; it is the device events' ce-sequence.
ALTER TABLE devices ADD COLUMN event_seq bigint NOT NULL DEFAULT 0,
                    ADD COLUMN applied_config_version bigint;

CREATE TABLE device_configs (
    scope_type    text NOT NULL CHECK (scope_type IN ('merchant', 'store', 'device')),
    scope_id      uuid NOT NULL,
    merchant_id   uuid NOT NULL,
    version       bigint NOT NULL,
    settings      jsonb NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope_type, scope_id)
);

-- What each device should run: the merge of merchant, store and device settings.
CREATE TABLE device_effective_config (
    device_id     uuid PRIMARY KEY,
    merchant_id   uuid NOT NULL,
    store_id      uuid NOT NULL,
    version       bigint NOT NULL,
    config        jsonb NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE rm_devices.device_status ADD COLUMN config_version bigint,
                                     ADD COLUMN config_applied_at timestamptz;
