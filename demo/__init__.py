"""The demo: a synthetic cohort (faker) walked through the whole journey."""
