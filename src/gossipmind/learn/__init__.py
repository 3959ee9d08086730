"""Failure to pattern, recipes, the executor, synthesis, drills and ranking."""
