-- Which gateway node holds each connected unit, shared by every gateway
-- process, so an MT command consumed by one node reaches the node that
-- holds the unit (see docs/architecture.md, "MT path and multi-node routing").
CREATE TABLE "rtc_presence" (
    "product_imei" TEXT PRIMARY KEY,
    "node" TEXT NOT NULL,
    "claimed_at" TIMESTAMP NOT NULL
);
CREATE INDEX "ix_rtc_presence_node" ON "rtc_presence" ("node");
