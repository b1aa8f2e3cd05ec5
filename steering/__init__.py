"""steering package."""
