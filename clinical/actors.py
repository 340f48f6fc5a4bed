"""Who did something, as the audit trail, the inbox and the history name them."""

ENGINE = "engine"
"""The actor of what CarePath does by itself: closing tasks whose cause is gone, expiring a
referral, recording a check-in's conclusion."""
