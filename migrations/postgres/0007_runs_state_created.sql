-- Runs of one state, newest first (the web UI's and `workerctl runs list
-- --state`'s pages, the dead-letter queue): one index on (state, created_at)
-- in place of the index on state alone, so a page reads its rows in order
-- instead of sorting every run of the state. It serves every query by state.
CREATE INDEX runs_state_created ON runs (state, created_at);
DROP INDEX runs_state;
