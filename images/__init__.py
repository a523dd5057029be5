"""Agent container images: the Dockerfile, the runner, and the builder (python -m images.build)."""
