"""Foundations every other package may import: errors and parameter fields. Standard library only."""
