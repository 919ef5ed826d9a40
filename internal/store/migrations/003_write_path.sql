-- Foreign keys that cost the write path more than they protect (measured in
-- docs/benchmarks.md):
--
-- similar_songs is derived data that only the similarity service writes (and
-- `similarity rebuild` recomputes from song_instruments), and songs are never
-- deleted. Its two foreign keys cost two row locks on songs per written entry:
-- at 20,000 songs, 2.1 million FOR KEY SHARE lookups, the largest single cost
-- in Postgres. Room on each page lets a rank rewritten in place stay a
-- heap-only (HOT) update.
ALTER TABLE similar_songs DROP CONSTRAINT similar_songs_song_fkey;
ALTER TABLE similar_songs DROP CONSTRAINT similar_songs_other_fkey;
ALTER TABLE similar_songs SET (fillfactor = 70);

-- song_instruments.instrument referenced the 129-row catalog: every extract
-- transaction share-locked the same few catalog rows, so concurrent batches
-- piled multixacts on them. The catalog never changes; a CHECK keeps the ids
-- in range, and the API joins the catalog by id.
ALTER TABLE song_instruments DROP CONSTRAINT song_instruments_instrument_fkey;
ALTER TABLE song_instruments ADD CONSTRAINT song_instruments_instrument_range CHECK (instrument BETWEEN 0 AND 128);
