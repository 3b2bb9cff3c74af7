"""mlship.data."""
