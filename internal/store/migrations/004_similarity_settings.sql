-- The settings the stored similarity lists were computed with. The similarity
-- service loads the stored lists at start when they match its own settings,
-- and recomputes every list when they do not (or when nothing is recorded).
CREATE TABLE similarity_settings (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    k               integer NOT NULL CHECK (k >= 1),
    min_instruments integer NOT NULL CHECK (min_instruments >= 1)
);

-- Bumped in the same transaction as every write to similar_songs, so a reader
-- that caches lists (the API) knows when to drop its copy.
CREATE TABLE similar_songs_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint NOT NULL
);
INSERT INTO similar_songs_version (version) VALUES (0);
GRANT SELECT ON similar_songs_version TO scale_reader;
