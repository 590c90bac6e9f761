"""adperf: which ads paid for themselves yesterday, which will, and what to do about it.

Plain Python (no luigi here): sources (`fetch_*`), transforms (`build_*`),
sinks (`load_*`/`post_*`).
The Luigi graph that wires them lives in the top-level `tasks` package.
"""

__version__ = "0.1.0"
