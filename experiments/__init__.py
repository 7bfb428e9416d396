"""Toy training studies (not product code): run from the repository root as python -m experiments.NAME."""
