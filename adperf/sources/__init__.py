"""adperf.sources."""
