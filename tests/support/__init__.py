"""Test doubles and harnesses shared by tests and benchmarks: `from tests.support.<module> import ...` from the repo."""
