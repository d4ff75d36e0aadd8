-- Reference data the spec's examples rely on, with the ids it uses:
-- state types 1-9, entity 1 "Unknown Entity" (new products start there),
-- the webhook channels, and the part and product types that the product
-- creation endpoints default to. Rows that already exist are left alone.
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (1, 'NON_EXISTANT', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (2, 'STORED', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (3, 'SHIPPED', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (4, 'ACTIVATING', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (5, 'ACTIVATED', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (6, 'MONITORED', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (7, 'UNMONITORED', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (8, 'IN_REPAIR_SYSTEM', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "state_type" ("state_type_id", "name", "created_at", "created_by") VALUES (9, 'TERMINATED', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "entity" ("entity_id", "name", "bboxx_company_flag", "created_at", "created_by") VALUES (1, 'Unknown Entity', FALSE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "channel" ("name", "created_at", "created_by") VALUES ('product-status', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "channel" ("name", "created_at", "created_by") VALUES ('product-alert', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "channel" ("name", "created_at", "created_by") VALUES ('dcm', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type_category" ("part_type_category_id", "name", "created_at", "created_by") VALUES (1, 'PCB', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type_category" ("part_type_category_id", "name", "created_at", "created_by") VALUES (2, 'SIM', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type_category" ("part_type_category_id", "name", "created_at", "created_by") VALUES (3, 'Battery', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (43, 'SIM', 2, 'known', FALSE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (44, 'BBOXX Home 2 PCB (Tiger 2)', 1, 'known', TRUE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (48, 'BBOXX Home 2 PCB (Tiger 6)', 1, 'known', TRUE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (61, 'BBOXX Home 2 PCB (Tiger 7)', 1, 'known', TRUE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (77, 'BBOXX Hub 2 PCB (Hyena)', 1, 'known', TRUE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (122, 'BBOXX Koala PCB', 1, 'known', TRUE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "part_type" ("part_type_id", "name", "part_type_category_id", "serial_number_category", "is_sent_by_unit", "created_at", "created_by") VALUES (158, 'BBOXX Home 3 PCB (Jackal)', 1, 'known', TRUE, '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "product_type" ("product_type_id", "name", "created_at", "created_by") VALUES (4, 'BBOXX Enterprise', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "product_type" ("product_type_id", "name", "created_at", "created_by") VALUES (6, 'BBOXX Home 2', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "product_type" ("product_type_id", "name", "created_at", "created_by") VALUES (7, 'BBOXX Hub 2', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;
INSERT INTO "product_type" ("product_type_id", "name", "created_at", "created_by") VALUES (10, 'BBOXX Home 3', '2026-11-26T00:00:00.000000', 'smartsolar') ON CONFLICT DO NOTHING;

-- Explicit ids do not advance identity sequences; move them past the seeded ids.
SELECT setval(pg_get_serial_sequence('"state_type"', 'state_type_id'), COALESCE((SELECT MAX("state_type_id") FROM "state_type"), 1));
SELECT setval(pg_get_serial_sequence('"entity"', 'entity_id'), COALESCE((SELECT MAX("entity_id") FROM "entity"), 1));
SELECT setval(pg_get_serial_sequence('"part_type_category"', 'part_type_category_id'), COALESCE((SELECT MAX("part_type_category_id") FROM "part_type_category"), 1));
SELECT setval(pg_get_serial_sequence('"part_type"', 'part_type_id'), COALESCE((SELECT MAX("part_type_id") FROM "part_type"), 1));
SELECT setval(pg_get_serial_sequence('"product_type"', 'product_type_id'), COALESCE((SELECT MAX("product_type_id") FROM "product_type"), 1));
