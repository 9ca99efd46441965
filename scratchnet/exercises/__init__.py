"""Graded exercises: write a backward pass, and have it checked (in progress)."""
