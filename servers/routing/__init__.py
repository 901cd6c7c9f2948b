"""Routing: routes with ETA on OpenStreetMap road graphs, live traffic, matrices, snapping."""
