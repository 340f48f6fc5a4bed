"""Side effects, and nothing else: the care-operations store and provider adapters."""
