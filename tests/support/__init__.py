"""Helpers the tests share (tests/conftest.py loads the fixtures among them as plugins): the fake engine, tiny
models of each architecture built in the test, the stand-in hub, the served app. Benchmarks reach them through
benchmarks/bench_common.py."""
