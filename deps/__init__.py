"""warmwire's own dependencies: the lock file every install takes its packages from."""
