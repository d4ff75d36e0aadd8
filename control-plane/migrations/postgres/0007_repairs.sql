-- Repair workflows (issue 5).
--
-- 1. At most one open repair per unit: get_repair creates the repair on
--    its first call, and two concurrent first calls must not create two.
--    A repair is open while its `outcome` is NULL (set when it ends).
-- 2. Indexes for the per-repair audit tables, read on every workflow step.
-- 3. Reference data the default workflow (workflows/bboxx_home_2.toml)
--    relies on: the casing and cable part types its "Select Damaged Casing"
--    state offers (ids as in the spec's IRT examples where it has them),
--    and which PCBs may replace which on a BBOXX Home 2 (product type 6),
--    in the order the spec's replace_pcb example lists them (61, 44, 48).
--    Rows that already exist are left alone.

CREATE UNIQUE INDEX IF NOT EXISTS "repair_one_open_per_product" ON "repair" ("product_imei") WHERE "outcome" IS NULL;
CREATE INDEX IF NOT EXISTS "repair_workflow_event_repair" ON "repair_workflow_event" ("repair_id");
CREATE INDEX IF NOT EXISTS "repair_workflow_history_repair" ON "repair_workflow_history" ("repair_id");
CREATE INDEX IF NOT EXISTS "repair_workflow_state_repair" ON "repair_workflow_state" ("repair_id");
CREATE INDEX IF NOT EXISTS "repair_part_type_linker_repair" ON "repair_part_type_linker" ("repair_id");

INSERT INTO "part_type_category" ("part_type_category_id", "name", "created_at", "created_by") VALUES (4, 'Casing', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type_category" ("part_type_category_id", "name", "created_at", "created_by") VALUES (5, 'Cable', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (12, 'Light Pipes', 4, 'unknown', FALSE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (15, 'Battery PCB Cable', 5, 'unknown', FALSE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (62, 'BBOXX Home 2 (Tiger) Battery Cable', 5, 'unknown', FALSE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (69, 'Home 2 Button Cap', 4, 'unknown', FALSE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (70, 'Home 2 Top Casing', 4, 'unknown', FALSE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (71, 'Home 2 Bottom Casing', 4, 'unknown', FALSE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 44, 61, FALSE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 44 AND "replacement_part_type_id" = 61);
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 44, 44, TRUE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 44 AND "replacement_part_type_id" = 44);
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 44, 48, FALSE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 44 AND "replacement_part_type_id" = 48);
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 48, 61, FALSE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 48 AND "replacement_part_type_id" = 61);
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 48, 44, FALSE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 48 AND "replacement_part_type_id" = 44);
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 48, 48, TRUE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 48 AND "replacement_part_type_id" = 48);
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 61, 61, TRUE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 61 AND "replacement_part_type_id" = 61);
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 61, 44, FALSE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 61 AND "replacement_part_type_id" = 44);
INSERT INTO "part_type_replacement_linker" ("product_type_id", "existing_part_type_id", "replacement_part_type_id", "default_part_type", "critical_part_type", "non_transferable", "created_at", "created_by") SELECT 6, 61, 48, FALSE, TRUE, FALSE, '2026-11-26T00:00:00.000000', 'smartsolar' WHERE NOT EXISTS (SELECT 1 FROM "part_type_replacement_linker" WHERE "product_type_id" = 6 AND "existing_part_type_id" = 61 AND "replacement_part_type_id" = 48);

-- Explicit ids do not advance identity sequences; move them past the seeded ids.
SELECT setval(pg_get_serial_sequence('"part_type_category"', 'part_type_category_id'), COALESCE((SELECT MAX("part_type_category_id") FROM "part_type_category"), 1));
SELECT setval(pg_get_serial_sequence('"part_type"', 'part_type_id'), COALESCE((SELECT MAX("part_type_id") FROM "part_type"), 1));
