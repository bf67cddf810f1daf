"""Benchmarks behind `rune bench`; one module per benchmark, each with `register(sub)`."""
