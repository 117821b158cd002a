"""eventpipe: a self-hosted real-time event pipeline."""
