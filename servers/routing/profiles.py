"""Travel-mode profiles: which ways a car, a bicycle or a pedestrian may use, how fast,
and what turns and nodes cost.

The numbers follow the public defaults of OSRM's profiles (``car.lua``,
``bicycle.lua``, ``foot.lua`` in osrm-bindings 26.10.0): class speeds, the access
tag hierarchies, oneway rules, ``maxspeed`` at 80 % for cars, surface caps,
OSRM's sigmoid turn cost, 20 s U-turns, 2 s signals, 60 s gates, and for cars its
"routability" rates (service alleys, narrow and single-lane roads weigh more than
their time: ``car_rate_factor``) and its rule that a local-access road may be
where a route starts or ends but not a shortcut. Those two shape only a route's
weight: its ETA is always the time driven. Bicycle and foot minimise time.

The car also follows OSRM in what decides a node and a turn: a node's own access
tags first (a gate tagged ``motorcar=yes``, ``access=permissive`` or ``private``
is open and costs nothing, one tagged ``access=no`` is a dead end to turn back at,
without the gate's 60 s), the barrier only when it has none; a U-turn costs the
hairpin's turn cost on top of the 20 s (27.5 s); a signal, stop or give-way sign
with a ``direction`` holds up only the traffic arriving that way along its way
(``delay_direction``); no oncoming-traffic term on turns from or onto a
roundabout; the car's size (2 m high, 1.9 m wide, 4.8 m long, 2 t: ``car_fits``)
against ``maxheight`` / ``maxwidth`` / ``width`` / ``maxlength`` / ``maxweight``; a
zone limit read from ``source:maxspeed`` or ``maxspeed:type`` when ``maxspeed`` is
absent; winter and ice roads at 20 and 15 km/h. Measured against OSRM on Helsinki
(``bench/routing.py``, 1,000 pairs), the gate and U-turn rules moved car distances within
5 % of OSRM's from 92 % to 95 % of pairs, directional signals most of durations within
1 % from 54 % to 76 %.

Where the car differs from OSRM on purpose, or for now:

- Only the largest strongly connected component is kept (``graph.py``), so any two
  snapped points have a route. OSRM keeps the pieces cut off at an extract's edge
  that can be left but not reached (or the reverse) and may start a route on one:
  Helsinki's westbound Bulevardi (way 30955822) is such a piece.
- A private service road (a yard, a car park) is never where OSRM starts or ends a
  route; it is marked ``CLASS_NO_START`` here, but snapping does not read it yet.
- A turn's angle is measured between the nodes next to the junction; OSRM looks
  further along each road, so at a few junctions of short, curving segments the
  two turn costs differ by 1-4 s (Unioninkatu at OSM node 25414177: 0.6 s here,
  2.2 s in OSRM).
- Not modelled: OSRM's stop-sign heuristics (``stop=minor``, a sign's direction
  guessed from its distance to the junction), HOV lanes, ``priority=forward/backward``, turning circles as
  U-turn places, a ferry's ``duration``, local access per direction (here per way)
  and the driving side (right-hand traffic everywhere).

A profile is pure: tags in, numbers out; ``graph.py`` applies it to a network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

# road classes a route can avoid (bit flags on every segment)
CLASS_TOLL = 1
CLASS_MOTORWAY = 2
CLASS_FERRY = 4
# local access only (access=destination, private, delivery...): a route may start or end on
# it but not cut through: entering it from a public road costs LOCAL_ACCESS_PENALTY_S of
# weight (OSRM's car gives that turn its largest turn weight, 3276.7 s), never of duration
CLASS_RESTRICTED = 8
LOCAL_ACCESS_PENALTY_S = 3276.7
# not a place to start or end a route (OSRM's car: a private service road, a car park's
# or a yard's, may be driven through as local access but is never snapped to); for the
# snapping index, which does not read it yet
CLASS_NO_START = 16

Tags = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class WayRule:
    """What a profile makes of one way: speeds per direction (0 = not allowed)."""

    forward_kmh: float
    backward_kmh: float
    name: str
    ref: str
    classes: int
    roundabout: bool
    # >= 1: the route's weight per second of driving on it (OSRM's "routability" rates,
    # inverted): service alleys and driveways, narrow and single-lane two-way roads count
    # longer than they take, so a route prefers proper streets; the ETA is never changed
    weight_factor: float = 1.0


class Profile(Protocol):
    name: str
    top_speed_kmh: float    # no segment is faster: the A* potential's speed
    u_turn_seconds: float

    def way(self, tags: Tags, country: str) -> WayRule | None: ...
    def blocks(self, node_tags: Tags) -> bool: ...
    def node_delay_seconds(self, node_tags: Tags) -> float: ...
    def delay_direction(self, node_tags: Tags) -> int: ...
    def turn_seconds(self, angle: F64, roundabout: Bools | None = None) -> F64: ...
    def restriction_applies(self, relation_tags: Tags) -> bool: ...


# -- shared tag reading ------------------------------------------------------------------

def directional(tags: Tags, keys: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The first value per direction among ``keys`` (``key:forward`` before ``key``)."""
    forward: str | None = None
    backward: str | None = None
    for key in keys:
        if forward is None:
            forward = tags.get(f"{key}:forward") or tags.get(key)
        if backward is None:
            backward = tags.get(f"{key}:backward") or tags.get(key)
        if forward is not None and backward is not None:
            break
    return forward, backward


def _most_permissive(value: str | None, whitelist: frozenset[str],
                     restricted: frozenset[str], blacklist: frozenset[str]) -> str | None:
    """``no;yes`` -> ``yes``: of several values the most permissive one counts."""
    if value is None or ";" not in value:
        return value
    parts = [p.strip() for p in value.split(";")]
    for group in (whitelist, restricted, blacklist):
        for p in parts:
            if p in group:
                return p
    return parts[0]


MAXSPEED_ZONES = {  # km/h for CC:zone codes; the defaults, then per-country exceptions
    "urban": 50.0, "rural": 90.0, "trunk": 110.0, "motorway": 130.0,
}
MAXSPEED_COUNTRY = {
    "at": {"rural": 100.0, "trunk": 100.0}, "be": {"motorway": 120.0},
    "ch": {"rural": 80.0, "trunk": 100.0, "motorway": 120.0},
    "de": {"living_street": 7.0, "rural": 100.0, "motorway": 0.0}, "dk": {"rural": 80.0},
    "es": {"trunk": 90.0}, "fr": {"rural": 80.0}, "nl": {"rural": 80.0, "trunk": 100.0},
    "no": {"rural": 80.0, "motorway": 110.0}, "ru": {"living_street": 20.0, "urban": 60.0,
                                                     "motorway": 110.0},
    "pl": {"rural": 100.0, "expressway": 120.0, "motorway": 140.0},
    "gb": {"nsl_single": 96.54, "nsl_dual": 112.63, "motorway": 112.63},
    "uk": {"nsl_single": 96.54, "nsl_dual": 112.63, "motorway": 112.63},
}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")


def parse_maxspeed(value: str | None, *, zones: bool = True) -> float:
    """``maxspeed`` in km/h; 0 when absent or not a limit (``walk``, ``signals``).

    ``50``, ``50 km/h`` -> 50; ``30 mph`` -> 48.3; ``none`` -> 140 (no limit: a
    motorway's cruising speed); ``SE:urban`` -> 50, ``DE:rural`` -> 100.
    """
    if not value:
        return 0.0
    text = value.strip().lower()
    match = _NUMBER.match(text)
    if match:
        number = float(match.group(1))
        if "mph" in text or "mp/h" in text:
            number *= 1.609
        elif "knots" in text:
            number *= 1.852
        return number
    if text == "none":
        return 140.0 if zones else 0.0
    if not zones:
        return 0.0
    if len(text) > 3 and text[2] == ":":
        country, zone = text[:2], text[3:]
        table = MAXSPEED_COUNTRY.get(country, {})
        if zone in table:
            return table[zone]
        return MAXSPEED_ZONES.get(zone, 0.0)
    return 0.0


def _cap(speed: float, tags: Tags, tables: tuple[tuple[str, Mapping[str, float]], ...]) -> float:
    for key, table in tables:
        cap = table.get(tags.get(key, ""))
        if cap is not None:
            speed = min(speed, cap)
    return speed


def _label(tags: Tags) -> tuple[str, str]:
    return tags.get("name", "").strip(), tags.get("ref", "").strip()


def osrm_turn_seconds(angle: F64, penalty: float, bias: float,
                      roundabout: Bools | None = None) -> F64:
    """OSRM's sigmoid turn cost: near 0 straight on, rising to ``penalty`` for a
    hairpin, steeper for turns across traffic (left, under right-hand traffic),
    plus a 2 s term for crossing oncoming traffic on a left turn, except where the
    turn comes from or goes onto a ``roundabout`` (traffic there runs one way)."""
    a = np.abs(angle) / 180.0
    right = penalty / (1.0 + np.exp(-((13.0 / bias) * a - 6.5 * bias)))
    left = penalty / (1.0 + np.exp(-((13.0 * bias) * a - 6.5 / bias)))
    oncoming = 2.0 / (1.0 + np.exp(-(13.0 * a - 3.25)))
    if roundabout is not None:
        oncoming = np.where(roundabout, 0.0, oncoming)
    result: F64 = np.where(angle >= 0, right, left + oncoming)
    return result


# -- car -----------------------------------------------------------------------------------

CAR_SPEEDS = {
    "motorway": 90.0, "motorway_link": 45.0, "trunk": 85.0, "trunk_link": 40.0,
    "primary": 65.0, "primary_link": 30.0, "secondary": 55.0, "secondary_link": 25.0,
    "tertiary": 40.0, "tertiary_link": 20.0, "unclassified": 25.0, "residential": 25.0,
    "living_street": 10.0, "service": 15.0, "winter_road": 20.0, "ice_road": 15.0,
}
CAR_WHITELIST = frozenset({"yes", "motorcar", "motor_vehicle", "vehicle", "permissive",
                           "designated", "hov"})
CAR_BLACKLIST = frozenset({"no", "agricultural", "forestry", "emergency", "psv", "taxi",
                           "share_taxi", "minibus", "bus", "foot", "emergency_vehicle",
                           "restricted", "military", "official", "customers", "private",
                           "delivery", "destination", "permit", "residents"})
# local access only: allowed on ordinary roads (a route may start or end there)
CAR_RESTRICTED = frozenset({"private", "delivery", "destination", "customers", "permit",
                            "residents", "unknown"})
CAR_RESTRICTED_OK = frozenset(CAR_SPEEDS)
CAR_PASSABLE_BARRIERS = frozenset({"cattle_grid", "border_control", "toll_booth", "sally_port",
                                   "no", "entrance", "height_restrictor", "arch", "gate",
                                   "lift_gate"})
CAR_SURFACE = {
    "cement": 80.0, "compacted": 80.0, "fine_gravel": 80.0, "paving_stones": 60.0,
    "metal": 60.0, "bricks": 60.0, "grass": 40.0, "wood": 40.0, "sett": 40.0,
    "grass_paver": 40.0, "gravel": 40.0, "unpaved": 40.0, "ground": 40.0, "dirt": 40.0,
    "pebblestone": 40.0, "tartan": 40.0, "cobblestone": 30.0, "clay": 30.0, "snow": 30.0,
    "earth": 20.0, "stone": 20.0, "rocky": 20.0, "sand": 20.0, "ice": 20.0,
    "laterite": 15.0, "mud": 10.0,
}
CAR_TRACKTYPE = {"grade1": 60.0, "grade2": 40.0, "grade3": 30.0, "grade4": 25.0, "grade5": 20.0}
CAR_SMOOTHNESS = {"intermediate": 80.0, "bad": 40.0, "very_bad": 20.0, "horrible": 10.0,
                  "very_horrible": 5.0, "impassable": 0.0}
CAR_AVOID_HIGHWAY = frozenset({"steps", "construction", "proposed"})
CAR_RESTRICTION_MODES = frozenset({"motorcar", "motor_vehicle", "vehicle"})
# a zone code may sit in source:maxspeed or maxspeed:type when maxspeed itself is absent
CAR_MAXSPEED_KEYS = ("maxspeed:advisory", "maxspeed", "source:maxspeed", "maxspeed:type")
CAR_TURN_PENALTY_S = 7.5
CAR_TURN_BIAS = 1.075
DELAY_DIRECTIONS = {"forward": 1, "backward": -1}


class CarProfile:
    name = "car"
    top_speed_kmh = 140.0  # a cap above any class speed and maxspeed=none at 80 % (112)
    # OSRM's 20 s U-turn penalty comes on top of its turn cost for a hairpin (7.46 s)
    u_turn_seconds = 20.0 + float(osrm_turn_seconds(np.array([180.0]), CAR_TURN_PENALTY_S,
                                                    CAR_TURN_BIAS)[0])
    hierarchy = ("motorcar", "motor_vehicle", "vehicle", "access")

    def way(self, tags: Tags, country: str) -> WayRule | None:
        highway = tags.get("highway", "")
        if (tags.get("area") == "yes" or highway in CAR_AVOID_HIGHWAY
                or tags.get("oneway") == "reversible" or tags.get("impassable") == "yes"
                or tags.get("service") == "emergency_access"
                or tags.get("construction", "no") not in ("no", "widening", "minor")):
            return None
        ferry = tags.get("route") in ("ferry", "shuttle_train")
        access = directional(tags, self.hierarchy)
        speeds = []
        restricted = False
        values = [_most_permissive(v, CAR_WHITELIST, CAR_RESTRICTED, CAR_BLACKLIST)
                  for v in access]
        for value in values:
            restricted |= value in CAR_RESTRICTED
            if ferry:
                base = 5.0 if tags.get("route") == "ferry" else 10.0
            elif tags.get("bridge") == "movable":
                base = 5.0
            elif highway in CAR_SPEEDS:
                base = CAR_SPEEDS[highway]
            elif value is not None and value not in CAR_BLACKLIST:
                base = 10.0  # an unclassed way a car is explicitly allowed on
            else:
                base = 0.0
            if value in CAR_BLACKLIST and not (value in CAR_RESTRICTED
                                               and highway in CAR_RESTRICTED_OK):
                base = 0.0
            speeds.append(base)
        forward, backward = (speed if fits else 0.0
                             for speed, fits in zip(speeds, car_fits(tags)))
        if forward <= 0 and backward <= 0:
            return None
        if not ferry:
            limits = directional(tags, CAR_MAXSPEED_KEYS)
            adjusted = []
            for speed, limit in zip((forward, backward), limits):
                kmh = parse_maxspeed(limit)
                if speed > 0 and kmh > 0:
                    speed = kmh * 0.8
                adjusted.append(min(_cap(speed, tags, (("surface", CAR_SURFACE),
                                                       ("tracktype", CAR_TRACKTYPE),
                                                       ("smoothness", CAR_SMOOTHNESS))),
                                    self.top_speed_kmh))
            forward, backward = adjusted
        forward, backward = _oneway(tags, forward, backward,
                                    ("oneway:motorcar", "oneway:motor_vehicle",
                                     "oneway:vehicle", "oneway"),
                                    implied=highway == "motorway")
        classes = 0
        if tags.get("toll") == "yes":
            classes |= CLASS_TOLL
        if highway in ("motorway", "motorway_link"):
            classes |= CLASS_MOTORWAY
        if ferry:
            classes |= CLASS_FERRY
        if restricted:
            classes |= CLASS_RESTRICTED
        if highway == "service" and values[0] == "private":
            classes |= CLASS_NO_START
        name, ref = _label(tags)
        return WayRule(forward, backward, name, ref, classes, _roundabout(tags),
                       1.0 / car_rate_factor(tags, two_way=forward > 0 and backward > 0))

    def blocks(self, node_tags: Tags) -> bool:
        for key in self.hierarchy:
            value = node_tags.get(key)
            if value is not None:
                return value in CAR_BLACKLIST and value not in CAR_RESTRICTED
        barrier = node_tags.get("barrier")
        if barrier is None:
            return False
        if barrier == "kerb" and node_tags.get("kerb") in ("lowered", "flush"):
            return False
        if barrier == "bollard" and node_tags.get("bollard") == "rising":
            return False
        return barrier not in CAR_PASSABLE_BARRIERS

    def node_delay_seconds(self, node_tags: Tags) -> float:
        # a node's own access tags say what it is for a car (as in blocks): a gate tagged
        # motorcar=yes or access=permissive stands open and costs nothing, one tagged
        # access=no is a dead end to turn back at (not 60 s plus the U-turn)
        gate = (node_tags.get("barrier") in ("gate", "lift_gate")
                and not any(key in node_tags for key in self.hierarchy))
        if gate:
            return 60.0
        highway = node_tags.get("highway")
        if highway in ("traffic_signals", "stop"):
            return 2.0
        if highway == "give_way":
            return 1.0
        return 0.0

    def delay_direction(self, node_tags: Tags) -> int:
        """Which traffic a node's delay holds up: a signal, stop or give-way sign tagged
        ``direction`` (``traffic_signals:direction`` first, for a signal) ``forward``
        stops only traffic arriving along its way as the way is drawn (+1), ``backward``
        only traffic against it (-1); untagged or by compass bearing, both (0)."""
        highway = node_tags.get("highway")
        if highway not in ("traffic_signals", "stop", "give_way"):
            return 0
        value = node_tags.get("direction")
        if highway == "traffic_signals":
            value = node_tags.get("traffic_signals:direction") or value
        return DELAY_DIRECTIONS.get(value or "", 0)

    def turn_seconds(self, angle: F64, roundabout: Bools | None = None) -> F64:
        return osrm_turn_seconds(angle, CAR_TURN_PENALTY_S, CAR_TURN_BIAS, roundabout)

    def restriction_applies(self, relation_tags: Tags) -> bool:
        return _restriction_for(relation_tags, CAR_RESTRICTION_MODES)


CAR_SERVICE_PENALTY = frozenset({"alley", "parking", "parking_aisle", "driveway",
                                 "drive-through", "drive-thru"})


def car_rate_factor(tags: Tags, *, two_way: bool) -> float:
    """OSRM's car rate factors (0.4..1, the smallest that applies): 0.5 on service alleys,
    parking aisles and driveways; on two-way roads 0.75 without lane markings, by a width
    under 6 m (<= 3 m 0.5, < 4 m 0.6, < 5 m 0.75, < 6 m 0.8, instead of the lane markings)
    and 0.5 with a single lane; 0.4 for an alternating oneway; 0.8 for a side road."""
    factors = [1.0]
    if tags.get("highway") == "service" and tags.get("service") in CAR_SERVICE_PENALTY:
        factors.append(0.5)
    if two_way:
        width = _metres(tags.get("width"))
        if width is not None and 0 < width < 6:
            factors.append(0.5 if width <= 3 else 0.6 if width < 4 else 0.75 if width < 5
                           else 0.8)
        elif tags.get("lane_markings") == "no":
            factors.append(0.75)
        lanes = _number(tags.get("lanes"))
        if lanes is not None and lanes <= 1:
            factors.append(0.5)
    if tags.get("oneway") == "alternating":
        factors.append(0.4)
    if tags.get("side_road") in ("yes", "rotary"):
        factors.append(0.8)
    return min(factors)


def _number(value: str | None) -> float | None:
    match = _NUMBER.match(value or "")
    return float(match.group(1)) if match else None


# the car OSRM sizes its profile for: 2.0 m high, 1.9 m wide, 4.8 m long, 2 t
CAR_HEIGHT_M, CAR_WIDTH_M, CAR_LENGTH_M, CAR_WEIGHT_KG = 2.0, 1.9, 4.8, 2000.0
_MEASURE = re.compile(r"\d+(?:\.\d*)?")


def _metres(value: str | None) -> float | None:
    """``2.5``, ``2,5 m`` -> 2.5; ``6'6"`` (feet and inches) -> 1.98; None if no number."""
    match = _MEASURE.search((value or "").replace(",", "."))
    if match is None:
        return None
    number = float(match.group())
    if "'" in (value or ""):
        inches = re.search(r"'\D*(\d+)", value or "")
        number = (number * 12 + (int(inches.group(1)) if inches else 0)) * 0.0254
    return number


def _kilograms(value: str | None) -> float | None:
    """``3.5`` (tonnes, the default unit), ``800 kg``, ``4000 lbs`` -> kilograms."""
    number = _metres(value)
    if number is None or value is None:
        return None
    if "lbs" in value:
        return number * 0.45359237
    return number if "kg" in value else number * 1000.0


def car_fits(tags: Tags) -> tuple[bool, bool]:
    """Whether the car fits each direction of a way, as OSRM sizes it: not under a
    ``maxheight`` below 2 m, through a ``maxwidth`` / ``width`` of 1.9 m or less, past a
    ``maxlength`` below 4.8 m or over a ``maxweight`` below 2 t (``:physical`` first,
    ``:forward`` / ``:backward`` per direction)."""
    checks: tuple[tuple[tuple[str, ...], Callable[[str | None], float | None], float, bool],
                  ...] = (  # keys, parser, the car's size, whether equal is too small
        (("maxheight:physical", "maxheight"), _metres, CAR_HEIGHT_M, False),
        (("maxwidth:physical", "maxwidth", "width", "est_width"), _metres, CAR_WIDTH_M, True),
        (("maxlength",), _metres, CAR_LENGTH_M, False),
        (("maxweightrating", "maxweight"), _kilograms, CAR_WEIGHT_KG, False),
    )
    fits = [True, True]
    for keys, parse, size, equal_too_small in checks:
        for side, value in enumerate(directional(tags, keys)):
            number = parse(value)
            if number is not None and (number < size or (equal_too_small and number == size)):
                fits[side] = False
    return fits[0], fits[1]


# -- bicycle -------------------------------------------------------------------------------

BIKE_SPEED = 15.0
BIKE_WALK = 4.0
BIKE_CLASSES = frozenset({"primary", "primary_link", "secondary", "secondary_link", "tertiary",
                          "tertiary_link", "unclassified", "residential", "living_street",
                          "service", "cycleway", "road"})
BIKE_OTHER = {"track": 12.0, "path": 13.0}
BIKE_PUSH = {"footway": BIKE_WALK, "pedestrian": BIKE_WALK, "steps": 2.0, "platform": BIKE_WALK}
BIKE_WHITELIST = frozenset({"yes", "permissive", "designated"})
BIKE_BLACKLIST = frozenset({"no", "private", "agricultural", "forestry", "delivery",
                            "use_sidepath"})
BIKE_SURFACE = {
    "wood": 10.0, "metal": 10.0, "cobblestone:flattened": 10.0, "paving_stones": 10.0,
    "compacted": 10.0, "fine_gravel": 10.0, "ground": 10.0, "sett": 9.0, "dirt": 8.0,
    "cobblestone": 7.0, "unpaved": 6.0, "gravel": 6.0, "pebblestone": 6.0, "grass_paver": 6.0,
    "earth": 6.0, "grass": 6.0, "laterite": 5.0, "mud": 3.0, "sand": 3.0, "woodchips": 3.0,
}
BIKE_TOP = 21.0
NODE_BLOCKERS = frozenset({"yes", "wall", "fence"})


class BicycleProfile:
    """Cycling at 15 km/h on roads and cycleways (OSRM's default), pushing at 4 km/h
    where only walking is allowed or against a oneway, capped at 21 km/h."""

    name = "bicycle"
    top_speed_kmh = BIKE_TOP
    u_turn_seconds = 20.0
    hierarchy = ("bicycle", "vehicle", "access")

    def way(self, tags: Tags, country: str) -> WayRule | None:
        highway = tags.get("highway", "")
        if (tags.get("area") == "yes" or tags.get("impassable") == "yes"
                or tags.get("motorroad") == "yes" or highway in ("construction", "proposed")):
            return None
        ferry = tags.get("route") == "ferry"
        access = directional(tags, self.hierarchy)
        plain = _most_permissive(tags.get("bicycle") or tags.get("vehicle") or tags.get("access"),
                                 BIKE_WHITELIST, frozenset(), BIKE_BLACKLIST)
        if plain in BIKE_BLACKLIST:
            return None
        if tags.get("bicycle") == "dismount":
            ride = BIKE_WALK
        elif ferry:
            ride = 5.0
        elif highway in BIKE_CLASSES:
            ride = BIKE_SPEED
        elif highway in BIKE_OTHER:
            ride = BIKE_OTHER[highway]
        elif plain in BIKE_WHITELIST:
            ride = BIKE_SPEED
        else:
            ride = 0.0
        foot_ok = tags.get("foot") != "no"
        push = 0.0
        if foot_ok:
            push = BIKE_PUSH.get(highway, BIKE_WALK if highway in BIKE_CLASSES
                                 or highway in BIKE_OTHER else 0.0)
        if ride <= 0 and push <= 0:
            return None
        forward, backward = (ride if v not in BIKE_BLACKLIST else 0.0 for v in access)
        if not ferry:
            limit = parse_maxspeed(tags.get("maxspeed"), zones=False)
            forward, backward = (
                min(_cap(min(s, limit) if limit > 0 else s, tags, (("surface", BIKE_SURFACE),)),
                    BIKE_TOP)
                for s in (forward, backward))
        implied = highway == "motorway"
        forward, backward = _oneway(tags, forward, backward, ("oneway:bicycle", "oneway"),
                                    implied=implied, bicycle=True)
        roundabout = _roundabout(tags)
        # where riding is not allowed, walk the bicycle (also against a oneway street),
        # but never backwards round a roundabout
        if forward <= 0:
            forward = push
        if backward <= 0 and not (roundabout or implied):
            backward = push
        if forward <= 0 and backward <= 0:
            return None
        name, ref = _label(tags)
        return WayRule(forward, backward, name, ref, CLASS_FERRY if ferry else 0, roundabout)

    def blocks(self, node_tags: Tags) -> bool:
        return _light_barrier(node_tags, self.hierarchy, BIKE_BLACKLIST,
                              crossing_open=True)

    def node_delay_seconds(self, node_tags: Tags) -> float:
        return _signal_delay(node_tags)

    def delay_direction(self, node_tags: Tags) -> int:
        return 0

    def turn_seconds(self, angle: F64, roundabout: Bools | None = None) -> F64:
        # quadratic in the angle, cheaper to the right than across traffic to the left
        base = (angle / 90.0) ** 2 * 6.0
        result: F64 = np.where(angle >= 0, base / 1.4, base * 1.4)
        return result

    def restriction_applies(self, relation_tags: Tags) -> bool:
        return _restriction_for(relation_tags, frozenset({"bicycle"}), general=False)


# -- foot ----------------------------------------------------------------------------------

FOOT_SPEED = 5.0
FOOT_CLASSES = frozenset({"primary", "primary_link", "secondary", "secondary_link", "tertiary",
                          "tertiary_link", "unclassified", "residential", "road",
                          "living_street", "service", "track", "path", "steps", "pedestrian",
                          "platform", "footway", "pier"})
FOOT_WHITELIST = frozenset({"yes", "foot", "permissive", "designated"})
FOOT_BLACKLIST = frozenset({"no", "agricultural", "forestry", "private", "delivery",
                            "use_sidepath"})
FOOT_SURFACE = {"fine_gravel": 3.75, "gravel": 3.75, "pebblestone": 3.75, "mud": 2.5,
                "sand": 2.5}


class FootProfile:
    """Walking at 5 km/h; oneway streets are walked both ways (only ``oneway:foot``
    counts); no turn restrictions; turns are free but for U-turns and signals."""

    name = "foot"
    top_speed_kmh = FOOT_SPEED
    u_turn_seconds = 2.0
    hierarchy = ("foot", "access")

    def way(self, tags: Tags, country: str) -> WayRule | None:
        highway = tags.get("highway", "")
        if (tags.get("area") == "yes" or tags.get("impassable") == "yes"
                or tags.get("motorroad") == "yes" or highway in ("construction", "proposed")):
            return None
        ferry = tags.get("route") == "ferry"
        access = directional(tags, self.hierarchy)
        plain = _most_permissive(tags.get("foot") or tags.get("access"), FOOT_WHITELIST,
                                 frozenset(), FOOT_BLACKLIST)
        if plain in FOOT_BLACKLIST:
            return None
        if ferry:
            base = 5.0
        elif (highway in FOOT_CLASSES or tags.get("railway") == "platform"
              or tags.get("man_made") == "pier" or plain in FOOT_WHITELIST):
            base = FOOT_SPEED
        else:
            return None
        base = _cap(base, tags, (("surface", FOOT_SURFACE),))
        forward, backward = (base if v not in FOOT_BLACKLIST else 0.0 for v in access)
        oneway = tags.get("oneway:foot")
        if oneway == "-1":
            forward = 0.0
        elif oneway in ("yes", "1", "true"):
            backward = 0.0
        if forward <= 0 and backward <= 0:
            return None
        name, ref = _label(tags)
        return WayRule(forward, backward, name, ref, CLASS_FERRY if ferry else 0,
                       _roundabout(tags))

    def blocks(self, node_tags: Tags) -> bool:
        return _light_barrier(node_tags, self.hierarchy, FOOT_BLACKLIST, crossing_open=False)

    def node_delay_seconds(self, node_tags: Tags) -> float:
        return _signal_delay(node_tags)

    def delay_direction(self, node_tags: Tags) -> int:
        return 0

    def turn_seconds(self, angle: F64, roundabout: Bools | None = None) -> F64:
        return np.zeros_like(angle)

    def restriction_applies(self, relation_tags: Tags) -> bool:
        return False


# -- shared rules --------------------------------------------------------------------------

def _light_barrier(node_tags: Tags, hierarchy: tuple[str, ...], blacklist: frozenset[str], *,
                   crossing_open: bool) -> bool:
    """Whether a node stops a bicycle or a pedestrian: its access tags decide if it has
    any (a bicycle may always cross at a crossing); else only walls, fences and
    ``barrier=yes`` block (not a rising bollard, not an audible fence)."""
    for key in hierarchy:
        value = node_tags.get(key)
        if value is not None:
            return value in blacklist and not (crossing_open
                                               and node_tags.get("highway") == "crossing")
    if node_tags.get("bollard") == "rising":
        return False
    if node_tags.get("barrier") == "fence" and node_tags.get("sensory") in ("audible", "audio"):
        return False
    return node_tags.get("barrier") in NODE_BLOCKERS


def _signal_delay(node_tags: Tags) -> float:
    return 2.0 if node_tags.get("highway") == "traffic_signals" else 0.0


def _roundabout(tags: Tags) -> bool:
    return tags.get("junction") in ("roundabout", "circular")


def _oneway(tags: Tags, forward: float, backward: float, keys: tuple[str, ...], *,
            implied: bool, bicycle: bool = False) -> tuple[float, float]:
    value = next((tags[k] for k in keys if k in tags), None)
    if bicycle and tags.get("oneway:bicycle") in ("no", "0", "false"):
        return forward, backward
    if value == "-1":
        forward = 0.0
    elif value in ("yes", "1", "true"):
        backward = 0.0
    elif value not in ("no", "0", "false") and (implied or _roundabout(tags)):
        backward = 0.0
    if bicycle and forward > 0 and backward <= 0 and _contraflow(tags):
        backward = forward
    return forward, backward


def _contraflow(tags: Tags) -> bool:
    """A cycle lane against the traffic of a oneway street."""
    return any(tags.get(k, "").startswith("opposite")
               for k in ("cycleway", "cycleway:left", "cycleway:right", "cycleway:both"))


def _restriction_for(tags: Tags, modes: frozenset[str], general: bool = True) -> bool:
    excepted = {v.strip() for v in tags.get("except", "").split(";")}
    if excepted & modes:
        return False
    if general and "restriction" in tags:
        return True
    return any(f"restriction:{m}" in tags for m in modes)


PROFILES: dict[str, Profile] = {p.name: p for p in (CarProfile(), BicycleProfile(),
                                                     FootProfile())}

