"""The limits every benchmark checks its figures against, each with where it comes from.

A limit is either a number named here (with its source) or a figure of the same run (the raw
producer's rate, the maximum a run reached): those are computed by the benchmark, and their
factor is named here.
"""

from __future__ import annotations

# --- ingest (issue 21), on the 2-core machine ----------------------------------------------
# Batches of 100: the api's CPU per event, all its processes together.
API_US_PER_EVENT_BATCH_100 = 8.0
# Batches of 100: the broker's CPU per record at most this many times what the raw producer's
# records cost it, in the same run.
BROKER_PER_RECORD_VS_RAW = 1.5
# Single events: the api's CPU per request.
API_US_PER_REQUEST_BATCH_1 = 50.0
# Single events at 256 connections: at least this many times the baseline below.
BATCH_1_GAIN = 2.0
# The baseline: eventpipe's api at batch 1 x 256 connections, measured 2026-11-29 beside PostHog's
# capture (shared/notes/peers-measured.md, "PostHog capture tuned, side by side", 9.1k-9.6k).
BATCH_1_AT_256_BASELINE = 9_600.0
BATCH_1_AT_256_BASELINE_SOURCE = "BATCH_1_AT_256_BASELINE (peers-measured.md, 2026-11-29)"
# p99 of a run paced at this fraction of the maximum the same run reached.
PACED_FRACTION = 0.5
P99_AT_HALF_MAX_MS = 50.0

# --- auth_check ----------------------------------------------------------------------------------
# The whole check (signature and Redis lookup) at p99, and the mean time it adds to a request.
AUTH_CHECK_P99_US = 300.0
