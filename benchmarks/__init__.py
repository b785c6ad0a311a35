"""Performance benchmark of nzsp-fem (a tool, not part of the library): run it from the
repository root with ``python3 -m benchmarks.bench`` (``make bench``)."""
