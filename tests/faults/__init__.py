"""Fault tests: kills, reruns, dependency faults, bad input, secrets (issue 9)."""
