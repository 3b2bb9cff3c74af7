"""mlship.serving."""
