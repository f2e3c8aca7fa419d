-- The outbox no longer indexes event ids. Nothing looks a row up by its
-- event id: the relay reads in id order and deletes by id. Event ids are
-- UUIDv7 made for each row, and duplicates downstream are JetStream's to
-- drop (Nats-Msg-Id is the event id) and the consumers' (ce-id). The unique
-- index cost every event a second B-tree insert: 7% of the WAL records
-- the scenario-1 mix wrote (bench/NOTES.md, step 46).
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
