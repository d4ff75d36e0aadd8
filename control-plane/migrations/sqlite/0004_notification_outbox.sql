-- The durable outbox of webhook notifications. A row is written in the same
-- transaction as the change that causes it, so a crash can never lose one;
-- the delivery worker (webhooks) reads from here.
CREATE TABLE "notification" (
    "notification_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "channel" TEXT NOT NULL REFERENCES "channel" ("name"),
    "product_imei" TEXT,
    "payload" TEXT NOT NULL,
    "created_at" TEXT NOT NULL
);
CREATE INDEX "ix_notification_channel" ON "notification" ("channel", "notification_id");
