"""Benchmarks: each module ``gen/bench/<name>.py`` exposes ``run(out_dir, quick=False) -> dict``,
writes ``out_dir/<name>.json`` (plus CSV/PNG where useful) and prints a short table.
``accelgen bench`` / ``make bench`` run them all. Figures come from here, never from timed tests.
"""
