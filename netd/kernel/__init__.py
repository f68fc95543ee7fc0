"""netd.kernel package."""
