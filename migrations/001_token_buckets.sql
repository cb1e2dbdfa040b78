-- One row per client bucket. tokens is fractional (the limiter refills
-- continuously) and is the value at last_refill; a reader computes the
-- current value as least(capacity, tokens + rate_per_sec * seconds since).
CREATE TABLE token_buckets (
    client_id    text             PRIMARY KEY,
    capacity     bigint           NOT NULL,
    tokens       double precision NOT NULL,
    rate_per_sec double precision NOT NULL,
    last_refill  timestamptz      NOT NULL,
    -- managed: created or changed through the admin API, never evicted.
    managed      boolean          NOT NULL DEFAULT false,
    created_at   timestamptz      NOT NULL DEFAULT now(),
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT token_buckets_client_id_length CHECK (octet_length(client_id) BETWEEN 1 AND 256),
    CONSTRAINT token_buckets_capacity_positive CHECK (capacity > 0),
    CONSTRAINT token_buckets_tokens_not_negative CHECK (tokens >= 0),
    CONSTRAINT token_buckets_tokens_within_capacity CHECK (tokens <= capacity),
    CONSTRAINT token_buckets_rate_positive CHECK (rate_per_sec > 0)
);

CREATE INDEX token_buckets_updated_at_idx ON token_buckets (updated_at);

CREATE FUNCTION token_buckets_stamp_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- The persister sets updated_at itself in its batched upserts; the WHEN
-- clause, evaluated without calling PL/pgSQL, skips the function for those
-- rows, and any other writer that leaves updated_at alone gets it stamped.
CREATE TRIGGER token_buckets_stamp_updated_at
    BEFORE UPDATE ON token_buckets
    FOR EACH ROW
    WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION token_buckets_stamp_updated_at();
