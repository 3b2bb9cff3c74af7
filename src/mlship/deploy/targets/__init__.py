"""mlship.deploy.targets."""
