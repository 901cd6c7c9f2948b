"""Synthetic businesses where cell maths is hardest: poles, equator, antimeridian."""

from __future__ import annotations

from datetime import UTC, datetime

from geoplex.servers.proximity.domain import Business

EDGE_POINTS = [
    # (name, lat, lon): clusters where cell maths is hardest
    ("north-pole", 89.999, 0.0), ("north-pole-b", 89.995, 120.0), ("north-pole-c", 89.99, -60.0),
    ("south-pole", -89.999, 45.0), ("south-pole-b", -89.996, -135.0),
    ("antimeridian-east", 0.5, 179.999), ("antimeridian-west", 0.5, -179.999),
    ("antimeridian-east-b", 0.503, 179.995), ("antimeridian-west-b", 0.497, -179.997),
    ("equator-greenwich", 0.0, 0.0), ("equator-a", 0.001, -0.001), ("equator-b", -0.002, 0.003),
    ("fiji-east", -17.0, 179.99), ("fiji-west", -17.01, -179.99),
]


def edge_businesses() -> list[Business]:
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for n, (name, lat, lon) in enumerate(EDGE_POINTS):
        for k in range(5):  # a small cluster around each point
            dlat, dlon = 0.0007 * k, 0.0011 * k * (-1) ** k
            out.append(Business(id=f"syn-{n:02d}-{k}", name=f"{name} {k}", category="test",
                                lat=max(-90.0, min(90.0, lat + (dlat if lat < 89 else -dlat))),
                                lon=((lon + dlon + 180.0) % 360.0) - 180.0, source="synthetic",
                                create_time=now, update_time=now))
    return out
