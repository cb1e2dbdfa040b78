-- Several instances share one table. Spending is added as increments, so a
-- row may go into debt when instances overshoot together: tokens may be
-- negative (down to minus one capacity), and the overshoot is paid back.
ALTER TABLE token_buckets DROP CONSTRAINT token_buckets_tokens_not_negative;
ALTER TABLE token_buckets ADD CONSTRAINT token_buckets_tokens_bounded_debt CHECK (tokens >= -capacity);

-- version counts admin changes: spending synced against an older version
-- is dropped (the admin set the state absolutely), and a deleted row stays
-- as a tombstone (deleted = true) so that no instance's sync brings it back.
-- admin_at is when an admin change last touched the row: instances that
-- missed notifications re-read rows changed since.
ALTER TABLE token_buckets
    ADD COLUMN version  bigint      NOT NULL DEFAULT 0,
    ADD COLUMN deleted  boolean     NOT NULL DEFAULT false,
    ADD COLUMN admin_at timestamptz NOT NULL DEFAULT now();
UPDATE token_buckets SET version = 1 WHERE managed;

-- Syncs update tokens, last_refill and updated_at many times a second:
-- with no index on any of them the updates are HOT (no index write), which
-- is most of their cost. The purge of old rows scans the table instead.
DROP INDEX token_buckets_updated_at_idx;
CREATE INDEX token_buckets_admin_at_idx ON token_buckets (admin_at);
ALTER TABLE token_buckets SET (fillfactor = 80);
