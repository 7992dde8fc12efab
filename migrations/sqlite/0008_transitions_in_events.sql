-- A run's transitions are its events of kind 'run' (migration 0006 copied the
-- transitions recorded before then into `events`, and every transition since
-- has been written to both): the second copy goes. Each transition was a row
-- and an index entry written twice; the engine's hot path now writes it once
-- (docs/benchmarks.md, "Where the time goes", round three).
DROP TABLE transitions;
