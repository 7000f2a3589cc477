"""Leaderboards, the seed-paper comparison and the performance benchmarks of Esper."""
