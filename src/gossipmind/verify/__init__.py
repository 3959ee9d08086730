"""Verifier checks, goal constraints and conflicts."""
