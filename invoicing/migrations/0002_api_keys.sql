-- 0002 api keys: the bearer keys of the events API, stored hashed.
--
-- A key is 32 random bytes (URL-safe base64, prefixed "bh_"), shown once when created.
-- Only its SHA-256 is kept: the key is random and long, so a fast hash cannot be
-- brute-forced and verification stays cheap on the ingestion hot path. key_prefix
-- (the first characters) lets an operator recognise a key without revealing it.
-- A revoked key stays as a row (revoked_at set) so the history of who could write
-- events is kept.
CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (name <> ''),
    key_prefix text NOT NULL CHECK (key_prefix <> ''),
    key_sha256 bytea NOT NULL UNIQUE CHECK (octet_length(key_sha256) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
