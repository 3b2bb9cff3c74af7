"""mlship.deploy."""
