"""Proximity: businesses near a point, business details, owner edits."""
