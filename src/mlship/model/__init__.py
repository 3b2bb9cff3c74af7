"""mlship.model."""
