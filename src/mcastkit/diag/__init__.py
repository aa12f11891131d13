"""Diagnostics: multicast ping, throughput bench, doctor and dump (sans-I/O cores)."""
