"""Helpers shared by the test suite: free ports, polling waits, child processes."""
