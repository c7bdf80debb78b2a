"""Profiling multi-process servers (seed 002, 方式 B): presets, readiness, load, capture window."""
