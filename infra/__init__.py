"""Deployment files and the local stack; ``infra.local`` is importable from the repository root."""
