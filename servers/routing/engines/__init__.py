"""Shortest-path engines on a :class:`~geoplex.servers.routing.graph.RoadGraph`'s arrays."""
