"""Deterministic Temporal workflow code, and nothing else."""
