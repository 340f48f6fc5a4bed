"""CarePath's clinical model and rules: pydantic models and pure functions.

Nothing here imports Temporal or touches I/O, so every rule is testable on its own and
safe to call from deterministic workflow code.
"""
