-- The writes one order creation makes (command-api's run_idempotent +
-- orders::insert + outbox::append + idempotency::record), as one pgbench
-- transaction: claim the key (advisory lock + lookup), insert the order,
-- append its event to the outbox (whose trigger NOTIFYs the relay), record
-- the response under the key, commit. Values are the size of real ones.
\set k random(1, 9000000000000000000)
BEGIN;
SELECT pg_try_advisory_xact_lock(hashtextextended('device-bench-' || :k::text, 7));
SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE caller = 'device-bench' AND key = :k::text;
INSERT INTO orders (id, merchant_id, store_id, device_id, currency, status, lines, taxes, subtotal, tax, total, customer, business_date, version, created_at, updated_at)
  VALUES (gen_random_uuid(), 'be0c0000-0000-7000-8000-010000000000', 'be0c0000-0000-7000-8000-020000000000', 'be0c0000-0000-7000-8000-030000000000', 'JPY', 'open',
    '[{"sku":"coffee","name":"Coffee","quantity":2,"unit_price":450,"tax_category":"standard","tax_rate_bp":1000,"line_total":900},{"sku":"bagel","name":"Bagel","quantity":1,"unit_price":300,"tax_category":"reduced","tax_rate_bp":800,"line_total":300}]',
    '[{"tax_category":"reduced","tax_rate_bp":800,"taxable":300,"tax":24},{"tax_category":"standard","tax_rate_bp":1000,"taxable":900,"tax":90}]',
    1200, 114, 1314, NULL, current_date, 1, now(), now());
INSERT INTO outbox (event_id, subject, headers, payload)
  VALUES (gen_random_uuid(), 'pos.be0c0000-0000-7000-8000-010000000000.order.created',
    '[["ce-specversion","1.0"],["ce-id","0193a5b0-0000-7000-8000-00000000d001"],["ce-source","/merchants/be0c0000-0000-7000-8000-010000000000/stores/be0c0000-0000-7000-8000-020000000000/devices/be0c0000-0000-7000-8000-030000000000"],["ce-type","com.smartpos.order.created.v1"],["ce-time","2026-11-22T00:00:00.000000Z"],["ce-subject","0193a5b0-0000-7000-8000-00000000d001"],["ce-datacontenttype","application/json"],["ce-sequence","1"],["ce-merchantid","be0c0000-0000-7000-8000-010000000000"]]',
    convert_to(repeat('x', 420), 'UTF8'));
INSERT INTO idempotency_keys (caller, key, request_hash, status_code, response_body)
  VALUES ('device-bench', :k::text, sha256(:k::text::bytea), 201, convert_to(repeat('y', 520), 'UTF8'));
COMMIT;
