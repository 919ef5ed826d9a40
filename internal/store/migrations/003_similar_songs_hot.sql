-- similar_songs is derived data that only the similarity service writes (and
-- `similarity rebuild` recomputes from song_instruments), and songs are never
-- deleted. Its foreign keys cost two row locks on songs per written entry: at
-- 20,000 songs, 2.1 million FOR KEY SHARE lookups, the largest single cost in
-- Postgres (docs/benchmarks.md). Room on each page lets a rank rewritten in
-- place stay a heap-only (HOT) update.
ALTER TABLE similar_songs DROP CONSTRAINT similar_songs_song_fkey;
ALTER TABLE similar_songs DROP CONSTRAINT similar_songs_other_fkey;
ALTER TABLE similar_songs SET (fillfactor = 70);
