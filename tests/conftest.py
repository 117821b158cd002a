"""Shared fixtures. Integration fixtures start real servers once per run (tests/integration)."""
