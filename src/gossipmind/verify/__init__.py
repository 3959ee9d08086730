"""Verifier checks: static safety, drill reproduction, goal constraints, fleet evidence
(goal conflicts themselves are part of the fold: :mod:`gossipmind.core.goals`)."""
