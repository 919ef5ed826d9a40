-- Files found by ingest. Every row ends as exactly one song (status done) or one
-- failure (status failed); pending means not extracted yet.
CREATE TABLE discovered_files (
    source_key    text PRIMARY KEY,           -- s3://bucket/key or file:///path
    md5           text,                       -- content MD5 once known
    size          bigint NOT NULL CHECK (size >= 0),
    name          text NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    song_id       text,
    discovered_at timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CHECK ((status = 'done') = (song_id IS NOT NULL))
);
CREATE INDEX discovered_files_status ON discovered_files (status);

-- General MIDI catalog, written from the Go catalog (internal/gm) at start-up:
-- id 0–127 are the melodic programs, 128 is the drums.
CREATE TABLE instruments (
    id     smallint PRIMARY KEY CHECK (id BETWEEN 0 AND 128),
    name   text NOT NULL,
    family text NOT NULL
);

-- One song per distinct content (id = MD5 of the file).
CREATE TABLE songs (
    id                text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    name              text NOT NULL,
    source_key        text NOT NULL,
    smf_format        integer NOT NULL,
    tracks            integer NOT NULL,
    ticks_per_quarter integer NOT NULL,        -- 0 for SMPTE-timed files
    duration_seconds  double precision NOT NULL,
    initial_bpm       double precision NOT NULL,
    extracted_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE song_instruments (
    song_id    text NOT NULL REFERENCES songs (id) ON DELETE CASCADE,
    instrument smallint NOT NULL REFERENCES instruments (id),
    notes      integer NOT NULL CHECK (notes > 0),
    PRIMARY KEY (song_id, instrument)
);
CREATE INDEX song_instruments_instrument ON song_instruments (instrument, song_id);

ALTER TABLE discovered_files ADD FOREIGN KEY (song_id) REFERENCES songs (id);

-- Files that cannot become songs, with the reason.
CREATE TABLE failures (
    source_key text PRIMARY KEY REFERENCES discovered_files (source_key),
    md5        text,
    reason     text NOT NULL,
    attempts   integer NOT NULL CHECK (attempts >= 1),
    failed_at  timestamptz NOT NULL DEFAULT now()
);
