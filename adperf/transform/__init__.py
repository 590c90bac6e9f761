"""adperf.transform."""
