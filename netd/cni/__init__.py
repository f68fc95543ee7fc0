"""netd.cni package."""
