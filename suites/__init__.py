"""Benchmark suites (YAML files naming lm-eval tasks, AlpacaEval and UserEval sets) for checkpoint regression tests."""
