-- The debt a row may hold grows from one capacity to one capacity plus one
-- second of refill. When rate x sync interval exceeds the capacity (say 10
-- tokens at 100/s, synced every 200 ms), instances that overshoot together
-- owe more than one capacity per interval; a bound at one capacity forgave
-- the rest, so N instances admitted more than the limit (6 % more with 3
-- instances in limiter's TestSyncKeepsTheRefillUsedBetweenSyncs).
ALTER TABLE token_buckets DROP CONSTRAINT token_buckets_tokens_bounded_debt;
ALTER TABLE token_buckets ADD CONSTRAINT token_buckets_tokens_bounded_debt CHECK (tokens >= -(capacity + rate_per_sec));
