"""Engine tests: the shared engine suite and backend-specific tests."""
