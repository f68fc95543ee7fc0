"""netd.firewall package."""
