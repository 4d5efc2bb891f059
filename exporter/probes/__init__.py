"""Probes: SQL text, pure row parsing and the state each measurement needs."""
