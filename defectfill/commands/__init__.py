"""CLI verbs, one module each (see defectfill/cli.py)."""
