-- RTC glue (control-plane/src/rtc): idempotent MO processing and MT reply lookup.
--
-- `rtc_mo_applied`: one row per (MO correlation id, step) whose effects were
-- committed. The bus delivers at least once; each sink step inserts its row in
-- the same transaction as its effects (INSERT ... ON CONFLICT DO NOTHING), so
-- a redelivered MO changes nothing twice. Not a catalogue table (bookkeeping,
-- never served); prune old rows with rtc::prune_applied.
CREATE TABLE "rtc_mo_applied" (
    "correlation_id" TEXT NOT NULL,
    "step" TEXT NOT NULL,
    "product_imei" TEXT NOT NULL,
    "applied_at" TEXT NOT NULL,
    PRIMARY KEY ("correlation_id", "step")
);
CREATE INDEX "ix_rtc_mo_applied_applied_at" ON "rtc_mo_applied" ("applied_at");

-- `correlation_id` of the MO a history row records (32 hex); unique so a
-- redelivered batch writes each row once. Not a catalogue column.
ALTER TABLE "rtc_mo_message_history" ADD COLUMN "correlation_id" TEXT;
CREATE UNIQUE INDEX "ux_rtc_mo_message_history_correlation_id" ON "rtc_mo_message_history" ("correlation_id");

-- MT replies find their command by `message_reference` (the MT correlation id, 32 hex).
CREATE INDEX "ix_rtc_message_history_message_reference" ON "rtc_message_history" ("message_reference");
-- The product lookups of the unit directory.
CREATE INDEX "ix_product_rtc_network_ip" ON "product" ("rtc_network_name", "ip_address");
