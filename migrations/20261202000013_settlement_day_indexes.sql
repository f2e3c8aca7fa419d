-- A settlement reads back what it booked on its day (`settled_on = $2`,
-- `void_settled_on = $2`). No index led with those columns, so each read
-- walked the store's whole captured history through (store_id, captured_on):
-- a cost that grows with every year kept. Partial, so an entry is added only
-- when a payment is booked, once, at night.
CREATE INDEX payments_settled_day ON payments (store_id, settled_on) WHERE settled_on IS NOT NULL;
CREATE INDEX payments_void_settled_day ON payments (store_id, void_settled_on) WHERE void_settled_on IS NOT NULL;
