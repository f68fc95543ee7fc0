"""netd.ipam package."""
