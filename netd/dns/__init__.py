"""netd.dns package."""
