"""Benchmarks: each runs Tandem and a named peer in the same process and prints a ratio."""
