"""Benchmarks: scripts run by hand (not collected by pytest); results go to results/benchmarks.md."""
