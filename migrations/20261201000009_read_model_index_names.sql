-- Rebuilds made by earlier builds copied the read models' indexes under
-- names PostgreSQL chose (table_columns_idx), so a migration naming one of
-- them would fail on a rebuilt database. Rebuilds now keep the live names;
-- give back the names this project's migrations gave. On a database never
-- rebuilt, none of these exist and nothing changes.
ALTER INDEX IF EXISTS rm_bills.bills_merchant_id_store_id_created_at_order_id_idx RENAME TO bills_by_store;
ALTER INDEX IF EXISTS rm_bills.bills_merchant_id_created_at_order_id_idx RENAME TO bills_by_merchant;
ALTER INDEX IF EXISTS rm_bills.bill_payments_order_id_idx RENAME TO bill_payments_order;
ALTER INDEX IF EXISTS rm_bills.bill_refunds_order_id_idx RENAME TO bill_refunds_order;
ALTER INDEX IF EXISTS rm_sales.captures_store_id_business_date_idx RENAME TO captures_by_day;
ALTER INDEX IF EXISTS rm_sales.refunds_store_id_business_date_idx RENAME TO refunds_by_day;
