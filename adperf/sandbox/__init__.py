"""adperf.sandbox."""
