-- One row per similarity list instead of one per entry. A song that enters a
-- list moves every entry below it down a rank, so each new song rewrote about
-- 32 entry rows (in about 8 lists and its own): at 20,000 files the upsert of
-- similar_songs was half of all statement time in Postgres (pg_stat_statements,
-- docs/benchmarks.md). As lists, each new song rewrites about 9 rows.
CREATE TABLE similar_lists (
    song          text PRIMARY KEY,
    others        text[] NOT NULL,             -- the similar songs, best first
    scores        double precision[] NOT NULL, -- each one's Jaccard similarity
    shared        smallint[] NOT NULL,         -- instruments.id both songs use, entry after entry
    shared_counts smallint[] NOT NULL,         -- how many of shared each entry has
    CHECK (cardinality(scores) = cardinality(others) AND cardinality(shared_counts) = cardinality(others))
) WITH (fillfactor = 70); -- room on each page: a rewritten list stays a heap-only update

INSERT INTO similar_lists (song, others, scores, shared, shared_counts)
SELECT song, array_agg(other ORDER BY rank), array_agg(score ORDER BY rank),
       coalesce((SELECT array_agg(u.instrument ORDER BY e.rank, u.n)
                 FROM similar_songs e, unnest(e.shared) WITH ORDINALITY AS u(instrument, n)
                 WHERE e.song = l.song), '{}'),
       array_agg(cardinality(shared)::smallint ORDER BY rank)
FROM similar_songs l GROUP BY song;

DROP TABLE similar_songs;
GRANT SELECT ON similar_lists TO scale_reader;
