"""What every entry point shares, once: settings, logging, the Temporal connection and data
converter, the embedded server, and the care-operations store."""
