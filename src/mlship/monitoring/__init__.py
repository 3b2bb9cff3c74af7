"""mlship.monitoring."""
