-- Issue 20: indexes for the product list's usual filters and sort. With
-- product type and enable state filtered by equality and the list ordered by
-- serial number, both statements of a list request (the COUNT for
-- num_results and the page itself) read this index alone: the COUNT walks only
-- the matching entries, and the page reads its 10 rows in order, with no sort.
CREATE INDEX "ix_product_type_enable_serial" ON "product" ("product_type_id", "current_enable_flag", "serial_number");
