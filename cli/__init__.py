"""CarePath's command line (run as `python starter.py ...`), split by concern."""
