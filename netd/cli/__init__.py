"""netd.cli package."""
