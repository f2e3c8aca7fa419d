-- The durable consumer's definition as the runner last saw it on taking
-- over. Repositioning a consumer at the checkpoint deletes and recreates it;
-- a runner that died between the two left no consumer, and every runner
-- after it waited for an operator. Now it recreates the consumer from this.
ALTER TABLE projection_checkpoints ADD COLUMN consumer_config jsonb;
