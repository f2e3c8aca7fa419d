-- The per-statement NOTIFY trigger on outbox serialized every committing
-- command on PostgreSQL's notification queue lock (measured with pgbench on
-- a 2-core machine: about 1,100 transactions/s with it, 2,000 without, the
-- same writes). The command API now wakes its own relay in process and sends
-- at most one coalesced NOTIFY at a time for relays in other processes; the
-- workers' rare outbox writes notify in their own transactions.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
