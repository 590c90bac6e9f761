"""adperf.sinks."""
