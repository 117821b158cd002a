"""The read path beside its targets: the overview, event searches, the live stream's delay.

`uv run python -m bench.queries` (see docs/performance-queries.md). It starts Redis and PostgreSQL
with eventpipe.local over a state directory of its own that outlives the run, so the dataset (10
million archived events over 30 days and their aggregates) is loaded once and kept: a later run
finds it by its marker row, adds the events of the time since (at the same rate), and measures.
The archive is generated inside PostgreSQL (each daily partition filled alone, indexed in bulk,
attached, then vacuumed); the aggregates are counted from the archive itself, so they hold
exactly its counts. Then it measures, with the read functions of eventpipe.domain in-process and
over HTTP against `eventpipe api`: the overview for every preset range, event searches, and
(Kafka, the api and the processor running, the load paced at half the api's maximum) the delay
from an event's acknowledgement to its line on the live stream. Every process it started is
stopped at the end; the state directory stays."""
