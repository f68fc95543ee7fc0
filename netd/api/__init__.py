"""netd.api package."""
