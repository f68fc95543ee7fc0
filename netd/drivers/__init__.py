"""netd.drivers package."""
