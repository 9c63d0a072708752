"""Benchmarks that print JSON (`larr bench ...`), each against a baseline measured in the same run."""
