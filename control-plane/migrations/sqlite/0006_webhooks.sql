-- DCM and webhook delivery.
--
-- A zero-command has at most one final balance: a retried FinalBalance
-- report must never be stored (and published, and refunded) twice.
CREATE UNIQUE INDEX "ux_final_balance_zero_command_id" ON "final_balance" ("zero_command_id");

-- One subscription per channel and entity (spec: "You may only subscribe
-- one url to each channel"); subscribers of GLOBAL users have no entity.
CREATE UNIQUE INDEX "ux_subscriber_channel_entity" ON "subscriber" ("channel_name", COALESCE("entity_id", -1));

-- Fan-out progress of the outbox: set once a notification has been turned
-- into one delivery per matching subscriber.
ALTER TABLE "notification" ADD COLUMN "fanned_out_at" TEXT;
CREATE INDEX "ix_notification_not_fanned_out" ON "notification" ("notification_id") WHERE "fanned_out_at" IS NULL;

-- One notification to one subscriber. `status`: pending (to be sent, at
-- `next_attempt_at`), delivered, failed (gave up after the configured
-- number of attempts; can be re-sent). `locked_until` is the lease of the
-- worker that is sending it, so another instance does not send it too.
CREATE TABLE "webhook_delivery" (
    "webhook_delivery_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "notification_id" INTEGER NOT NULL REFERENCES "notification" ("notification_id"),
    "subscriber_id" INTEGER NOT NULL REFERENCES "subscriber" ("subscriber_id") ON DELETE CASCADE,
    "status" TEXT NOT NULL CHECK ("status" IN ('pending', 'delivered', 'failed')),
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TEXT NOT NULL,
    "locked_until" TEXT,
    "last_status_code" INTEGER,
    "last_error" TEXT,
    "delivered_at" TEXT,
    "created_at" TEXT NOT NULL,
    "modified_at" TEXT,
    UNIQUE ("notification_id", "subscriber_id")
);
CREATE INDEX "ix_webhook_delivery_due" ON "webhook_delivery" ("status", "subscriber_id", "notification_id");
CREATE INDEX "ix_webhook_delivery_subscriber" ON "webhook_delivery" ("subscriber_id", "webhook_delivery_id");

-- Every attempt to send a delivery: the delivery log.
CREATE TABLE "webhook_attempt" (
    "webhook_attempt_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "webhook_delivery_id" INTEGER NOT NULL REFERENCES "webhook_delivery" ("webhook_delivery_id") ON DELETE CASCADE,
    "attempt" INTEGER NOT NULL,
    "started_at" TEXT NOT NULL,
    "duration_ms" INTEGER NOT NULL,
    "status_code" INTEGER,
    "error" TEXT,
    "outcome" TEXT NOT NULL CHECK ("outcome" IN ('delivered', 'retry', 'failed'))
);
CREATE INDEX "ix_webhook_attempt_delivery" ON "webhook_attempt" ("webhook_delivery_id", "webhook_attempt_id");
