-- Backend changes made through the /backends admin API, shared by every
-- instance on this database and applied on top of EQUALIZER_BACKENDS (or
-- the configuration file) at start-up, on reload and when another instance
-- announces one (NOTIFY backends). state 'removed' is a tombstone: a
-- backend deleted through the API stays deleted even if the
-- configuration still lists it.
CREATE TABLE backends (
    url        text        PRIMARY KEY,
    weight     integer     NOT NULL,
    state      text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT backends_weight_range CHECK (weight BETWEEN 1 AND 1000),
    CONSTRAINT backends_state_known CHECK (state IN ('active', 'drained', 'removed'))
);
