-- What N instances admit together before they see each other's spending
-- (each starts a new key with a full bucket) is owed, not forgiven: a
-- floor of one capacity plus one second of refill forgave the rest, so a
-- key cold on 3 instances admitted 11 to 17 % more than its limit over
-- 20 s. Debt may now reach 8 capacities plus one second of refill
-- (limiter.DebtBound); a client pays back only what was really admitted.
ALTER TABLE token_buckets DROP CONSTRAINT token_buckets_tokens_bounded_debt;
ALTER TABLE token_buckets ADD CONSTRAINT token_buckets_tokens_bounded_debt CHECK (tokens >= -(8 * capacity + rate_per_sec));

-- Every sync appends the rows it left below capacity, as they are after
-- it (tokens as of at, and the admin version): the other instances read
-- this feed each interval and adopt the state of the keys they hold, so an
-- instance that is not using a bucket does not keep a stale one. One row
-- per sync (arrays), so a sync of 10,000 rows adds one insert and readers
-- look nothing up; rows older than a minute are deleted by the readers.
CREATE TABLE token_bucket_syncs (
    seq        bigserial   PRIMARY KEY,
    instance   text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    client_ids text[]      NOT NULL,
    tokens     float8[]    NOT NULL,
    versions   bigint[]    NOT NULL
);
CREATE INDEX token_bucket_syncs_at_idx ON token_bucket_syncs (at);
