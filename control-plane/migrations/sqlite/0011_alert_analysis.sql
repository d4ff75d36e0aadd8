-- Alert analysis (control-plane/src/alerts; docs/architecture.md, "Alert analysis").
--
-- At most one open (undismissed) alert per unit and alert type, in the
-- database and not only in the engine's code. Duplicates from before this
-- migration are closed first (all but the newest), by the system.
UPDATE "alert" SET "dismissed_at" = strftime('%Y-%m-%dT%H:%M:%S.000000', 'now'), "dismissed_by" = 'system',
    "dismissal_reason" = 'duplicate open alert closed by migration 0011'
WHERE "dismissed_at" IS NULL AND EXISTS (
    SELECT 1 FROM "alert" AS "newer"
    WHERE "newer"."product_imei" = "alert"."product_imei"
      AND "newer"."alert_type_id" = "alert"."alert_type_id"
      AND "newer"."dismissed_at" IS NULL
      AND "newer"."alert_id" > "alert"."alert_id");
CREATE UNIQUE INDEX "ux_alert_open" ON "alert" ("product_imei", "alert_type_id")
    WHERE "dismissed_at" IS NULL;
-- The cooling-off lookup: the latest dismissal of each unit and alert type.
CREATE INDEX "ix_alert_dismissed_at" ON "alert" ("dismissed_at");

-- When each (unit, alert type) was last analysed, so a pass finds what is due
-- without scanning analysis_history (which keeps every run). Bookkeeping,
-- not a catalogue table.
CREATE TABLE "alert_analysis_due" (
    "product_imei" TEXT NOT NULL,
    "alert_type_id" INTEGER NOT NULL,
    "last_analysed_at" TEXT NOT NULL,
    PRIMARY KEY ("product_imei", "alert_type_id")
);

-- Leases on IMEI hash buckets: an alert engine analyses only the units of
-- the buckets it holds, and commits each unit's results only while it still
-- holds the bucket, so two engines never analyse one unit at once.
CREATE TABLE "alert_lease" (
    "bucket" INTEGER PRIMARY KEY,
    "holder" TEXT NOT NULL,
    "expires_at" TEXT NOT NULL
);
-- The engines alive (each writes its row at every pass), so each can take
-- a fair share of the buckets even while it holds none.
CREATE TABLE "alert_engine" (
    "holder" TEXT PRIMARY KEY,
    "seen_at" TEXT NOT NULL
);

-- The per-pass window reads.
CREATE INDEX "ix_rtc_message_history_delivery_status_time" ON "rtc_message_history" ("delivery_status_time");
CREATE INDEX "ix_rtc_dead_letter_created_at" ON "rtc_dead_letter" ("created_at");
