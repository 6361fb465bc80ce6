"""Benchmark commands (``lookloop bench …``): each module registers one command with ``register(app)``."""
