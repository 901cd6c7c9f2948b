"""Readers of road data (OSM PBF, GeoJSON) and the shortest-path kernel behind its port."""
