"""Benchmarking: the timing harness (timing), the engines timed on exported files (engines), and the one model
table that bench and compare both print (table)."""
