"""netd.store package."""
