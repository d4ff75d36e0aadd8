-- Issue 19 (docs/decisions.md, "Issue 19: what an existing client still trips on").
--
-- Why an SMS has its status: the provider's error when Failed, the reason when
-- NotSent (no SMS provider configured). In the catalogue with "added_by".
ALTER TABLE "sms_history" ADD COLUMN "status_info" TEXT;

-- Users always belong to an entity (the spec's user.entity_id is not-null):
-- the operator's own entity holds the bootstrap administrator and every user
-- that had none.
INSERT INTO "entity" ("name", "bboxx_company_flag", "created_at", "created_by")
VALUES ('SMARTSolar Operator', TRUE, '2026-12-06T00:00:00.000000', 'smartsolar')
ON CONFLICT ("name") DO NOTHING;
UPDATE "user"
SET "entity_id" = (SELECT "entity_id" FROM "entity" WHERE "name" = 'SMARTSolar Operator'),
    "modified_at" = '2026-12-06T00:00:00.000000', "modified_by" = 'smartsolar'
WHERE "entity_id" IS NULL;
