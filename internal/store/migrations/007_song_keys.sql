-- The last foreign keys on the write path (measured in docs/benchmarks.md,
-- "Cheaper per file"): song_instruments.song_id and discovered_files.song_id
-- referenced songs, so every instrument row (5 per song on the Lakh corpus)
-- and every finished file looked its song up and share-locked its row. One
-- statement batch of one transaction (SaveOutcomes) writes a song, its
-- instruments and its file, and songs are never deleted (003), so the keys
-- checked what that writer does by construction.
ALTER TABLE song_instruments DROP CONSTRAINT song_instruments_song_id_fkey;
ALTER TABLE discovered_files DROP CONSTRAINT discovered_files_song_id_fkey;
