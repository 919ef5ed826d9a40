-- The settings the stored similarity lists were computed with. The similarity
-- service loads the stored lists at start when they match its own settings,
-- and recomputes every list when they do not (or when nothing is recorded).
CREATE TABLE similarity_settings (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    k               integer NOT NULL CHECK (k >= 1),
    min_instruments integer NOT NULL CHECK (min_instruments >= 1)
);
