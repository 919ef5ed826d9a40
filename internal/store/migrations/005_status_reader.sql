-- The API's status page reads the ledger and the failures (read-only, as the
-- rest of the API reads).
GRANT SELECT ON discovered_files, failures TO scale_reader;
