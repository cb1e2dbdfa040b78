-- Backend changes made through the admin API belong to a pool: /backends
-- is the pool "default", /pools/{name}/backends any other. Existing rows
-- are the pool "default". The notification names the pool and the URL.
ALTER TABLE backends ADD COLUMN pool text NOT NULL DEFAULT 'default';
ALTER TABLE backends DROP CONSTRAINT backends_pkey;
ALTER TABLE backends ADD PRIMARY KEY (pool, url);
