"""Presence: nearby friends, live, over bidirectional streams."""
