-- API tokens: only the SHA-256 of a token is stored. `expires_at` slides
-- forward on use (spec: a token expires 3 hours after its last use).
CREATE TABLE "api_token" (
    "api_token_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "user_id" INTEGER NOT NULL REFERENCES "user" ("user_id") ON DELETE CASCADE,
    "token_hash" TEXT NOT NULL UNIQUE,
    "expires_at" TEXT NOT NULL,
    "created_at" TEXT NOT NULL
);
CREATE INDEX "ix_api_token_user_id" ON "api_token" ("user_id");
