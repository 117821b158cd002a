"""No-op jobs and exports through `eventpipe worker`, each beside its limit, in one run.

`uv run python -m bench.jobs` (see bench/README.md). It starts Redis and PostgreSQL with
eventpipe.local in a temporary directory, then measures on them:

- no-op jobs through `eventpipe worker` (its `ping` task) and through Procrastinate's own minimal
  example (one `noop` task, `run_worker_async(concurrency=4, delete_jobs="successful")`), each on
  a fresh database: the enqueue rate, the rate at which the worker drains a backlog, and the delay
  from enqueue to start at a paced rate. The times come from triggers the benchmark adds to the
  queue's tables (the worker deletes a succeeded job, and its events with it);
- exports: for each row count, a fresh database with that many archived events of one project,
  then one export per format, each through a fresh `eventpipe worker` (rows/s, file size, the
  worker's peak RSS and CPU, PostgreSQL's CPU), beside `COPY (the same query) TO STDOUT` and the
  fetch and the writer alone on a sample of the rows.

Every process it started is stopped at the end."""
