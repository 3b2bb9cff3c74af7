"""mlship.security."""
