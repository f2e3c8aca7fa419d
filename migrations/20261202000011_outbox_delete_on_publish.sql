-- The relay deletes a row once JetStream has acknowledged storing it, rather
-- than marking it published for the janitor to delete an hour later. The
-- stream is the record of what was published; the outbox holds only what is
-- still to publish. A mark was an UPDATE that could not be HOT (the partial
-- indexes on published_at) and the janitor's DELETE a second write: per
-- event, one write instead of two, one index instead of three.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX outbox_unpublished;
DROP INDEX outbox_published_at;
ALTER TABLE outbox DROP COLUMN published_at;
