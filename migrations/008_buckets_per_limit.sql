-- Buckets belong to a limit: the limit "default" (the top-level bucket_*
-- settings, /buckets) or a named one of the configuration file
-- (/limits/{name}/buckets). Existing rows are the limit "default". The
-- primary key is not updated by syncs, so they stay HOT.
ALTER TABLE token_buckets ADD COLUMN limit_name text NOT NULL DEFAULT 'default';
ALTER TABLE token_buckets DROP CONSTRAINT token_buckets_pkey;
ALTER TABLE token_buckets ADD PRIMARY KEY (limit_name, client_id);
ALTER TABLE token_bucket_syncs ADD COLUMN limit_name text NOT NULL DEFAULT 'default';
