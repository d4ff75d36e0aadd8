-- The per-unit high-water mark of pruned MO dedupe records (issue 16, "nothing accepted is
-- ever lost"; docs/decisions.md, "Issue 16: the pruned mark").
--
-- `rtc_mo_applied` rows are pruned after days (rtc::prune_applied), but a version-2 unit can
-- resend an unacknowledged window after a much longer time offline. A claimed step now
-- records the MO's number (`boot`, `seq`: the unit's boot id and sequence number, protocol
-- §8; NULL for version-1 and HTTP units), and pruning folds the numbers of the rows it
-- deletes into `rtc_mo_pruned_mark`, in the same transaction: per (unit, boot id), the
-- highest pruned seq. A claim of an MO numbered at or below its mark is a repeat.
ALTER TABLE "rtc_mo_applied" ADD COLUMN "boot" BIGINT;
ALTER TABLE "rtc_mo_applied" ADD COLUMN "seq" BIGINT;

-- Small: one row per boot of a unit that had MO pruned. Not a catalogue table (bookkeeping,
-- never served).
CREATE TABLE "rtc_mo_pruned_mark" (
    "product_imei" TEXT NOT NULL,
    "boot" BIGINT NOT NULL,
    "pruned_through_seq" BIGINT NOT NULL,
    PRIMARY KEY ("product_imei", "boot")
);
