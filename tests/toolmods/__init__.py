"""Tool modules for the NETRA_TOOLS tests: each one is a misconfiguration (or a good one)."""
