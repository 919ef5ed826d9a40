-- Extract rewrites every ledger row once, when its file becomes a song or a
-- failure (status, song_id, md5, finished_at). With status indexed, each of
-- those rewrites was a new heap tuple plus an entry in both of the table's
-- indexes (a random leaf of the primary key's); without it, and with room
-- left on each page for the row's second version, it is a heap-only (HOT)
-- update that touches no index. Nothing reads the ledger by status through
-- the index: the counts (the status page, the chaos runner's progress
-- probe, the benchmarks' accounting) scan the table, as the status page's
-- count by finished_at already did (measured in docs/benchmarks.md).
DROP INDEX discovered_files_status;
ALTER TABLE discovered_files SET (fillfactor = 50);
