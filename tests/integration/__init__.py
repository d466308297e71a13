"""Integration tests: real coordinator and worker processes over loopback HTTP."""
