-- The default alert types seeded at start (control-plane/src/alerts/defaults.rs): which
-- labels were ever seeded, so a default an operator deleted or edited is never seeded again.
-- Bookkeeping, not a catalogue table.
CREATE TABLE "alert_type_default" (
    "label" TEXT PRIMARY KEY,
    "seeded_at" TIMESTAMP NOT NULL
);
