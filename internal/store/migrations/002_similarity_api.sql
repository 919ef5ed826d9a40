-- Each song's top-K most similar songs by Jaccard similarity of instrument sets.
CREATE TABLE similar_songs (
    song   text NOT NULL REFERENCES songs (id) ON DELETE CASCADE,
    rank   smallint NOT NULL CHECK (rank >= 1),
    other  text NOT NULL REFERENCES songs (id) ON DELETE CASCADE,
    score  double precision NOT NULL CHECK (score > 0 AND score <= 1),
    shared smallint[] NOT NULL,                 -- instruments.id both songs use
    PRIMARY KEY (song, rank)
);

-- Name search: trigram index for substring matches.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX songs_name_trgm ON songs USING gin (lower(name) gin_trgm_ops);
CREATE INDEX songs_name_id ON songs (name, id);

-- The API's role: it can read, nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'scale_reader') THEN
        CREATE ROLE scale_reader NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA public TO scale_reader;
GRANT SELECT ON songs, song_instruments, instruments, similar_songs TO scale_reader;
