"""netd.compose package."""
