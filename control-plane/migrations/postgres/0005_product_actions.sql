-- Product actions (issue 3).
--
-- A product is linked to an entity at most once at a time: assign_entity
-- racing with itself cannot leave two open links for the same pair.
CREATE UNIQUE INDEX "ux_product_entity_linker_open"
    ON "product_entity_linker" ("product_imei", "entity_id")
    WHERE "date_removed" IS NULL;
-- Delivery receipts find their SMS by the provider's reference.
CREATE INDEX "ix_sms_history_message_reference" ON "sms_history" ("message_reference");
-- The expiry sweep looks at undelivered SMS only.
CREATE INDEX "ix_sms_history_undelivered" ON "sms_history" ("sms_timeout") WHERE "status" IS NULL;
-- Latest-first reads of a unit's history and connections.
CREATE INDEX "ix_enable_history_product_date" ON "enable_history" ("product_imei", "enable_history_id");
CREATE INDEX "ix_connection_product_date" ON "connection" ("product_imei", "date");
