-- Bounds the pruned mark (0016): one row per unit and boot id would otherwise grow with every
-- reboot of every unit, forever (issue 16; docs/decisions.md, "Issue 16: the pruned mark").
--
-- `last_applied_at`: the newest applied time among the rows folded when the mark last rose.
-- A unit draws a new boot id only when its numbering starts again, having lost the window of
-- the old one (protocol §8.1), so once a mark of another boot of the same unit is newer, the
-- older boot's MO can no longer be resent and its mark is deleted (rtc::prune_applied).
ALTER TABLE "rtc_mo_pruned_mark" ADD COLUMN "last_applied_at" TIMESTAMP;
-- Marks from before this migration count as applied now: kept until a newer boot is seen.
UPDATE "rtc_mo_pruned_mark" SET "last_applied_at" = (now() AT TIME ZONE 'UTC');
