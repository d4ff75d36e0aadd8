-- The record of what each unit must still get (issue 16, docs/architecture.md "Guarantees"):
-- the MT commands of the unit's latest push (its desired state as a status update, its
-- pending payment commands) that the unit has not answered yet. Written with the
-- rtc_message_history rows of those commands (control-plane/src/rtc/mt.rs, record_pending),
-- replacing the unit's previous rows; a row leaves when the unit answers its MT. Gateways read
-- it when a unit connects or polls (control-plane/src/rtc/pending.rs), so their in-memory
-- queues are only a cache of it. Not a catalogue table (bookkeeping, never served).
CREATE TABLE "rtc_mt_pending" (
    "rtc_message_history_id" BIGINT PRIMARY KEY
        REFERENCES "rtc_message_history" ("rtc_message_history_id") ON DELETE CASCADE,
    "product_imei" TEXT NOT NULL
);
CREATE INDEX "ix_rtc_mt_pending_product_imei" ON "rtc_mt_pending" ("product_imei", "rtc_message_history_id");
