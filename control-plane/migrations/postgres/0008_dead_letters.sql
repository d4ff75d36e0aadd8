-- Dead-letter import (POST /rtc_import_*_dead_letters).
--
-- `dedupe_key`: hex SHA-256 of queue_name, a NUL byte and payload. The bus
-- delivers at least once, so the same dead letter can arrive twice; the
-- unique index makes the second insert a no-op (INSERT ... ON CONFLICT DO
-- NOTHING). Rows from before this migration keep NULL, which the index
-- allows any number of times.
--
-- `reason`: why ingest dead-lettered the message (the dead-letter envelope
-- carries it; the spec's columns have no place for it). Not a catalogue
-- column, so the generic GET does not return it; /decode does.
ALTER TABLE "rtc_dead_letter" ADD COLUMN "dedupe_key" TEXT;
ALTER TABLE "rtc_dead_letter" ADD COLUMN "reason" TEXT;
CREATE UNIQUE INDEX "ux_rtc_dead_letter_dedupe_key" ON "rtc_dead_letter" ("dedupe_key");
