"""The `interp` command line."""
