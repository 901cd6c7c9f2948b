"""The only module that knows both the maps protobuf messages and its domain types."""

from __future__ import annotations

import math

from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.latlng import location_from_pb
from geoplex.servers._runtime.paging import decode_cursor, encode_cursor, page_size

from . import domain

KIND_TO_PB = {domain.ADDRESS: pb.PLACE_KIND_ADDRESS, domain.STREET: pb.PLACE_KIND_STREET,
              domain.POI: pb.PLACE_KIND_POI, domain.PLACE: pb.PLACE_KIND_PLACE}
DEFAULT_PAGE = 10


def _scope(text: str, bias: tuple[float, float] | None) -> str:
    # hashed into the token, never stored in it: a token reveals neither text nor bias
    return f"geocode|{text}|{bias}"


def geocode_from_pb(request: pb.GeocodeRequest
                    ) -> tuple[str, tuple[float, float] | None, int, int]:
    """(text, bias, page size, offset), each checked."""
    text = request.text.strip()
    if not text:
        raise InvalidArgument("text", "is required", reason="REQUIRED_FIELD")
    if len(text) > domain.MAX_QUERY_CHARS:
        raise InvalidArgument("text", f"must be at most {domain.MAX_QUERY_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidArgument("text", "must not hold control characters")
    bias = (location_from_pb(request.bias, True, "bias") if request.HasField("bias")
            else None)
    size = page_size(request.page_size, DEFAULT_PAGE, domain.MAX_LIMIT)
    offset = 0
    if request.page_token:
        position, _ = decode_cursor(request.page_token, _scope(text, bias))
        if not 0 <= position <= 10_000:
            raise InvalidArgument("page_token", "is not a token this service issued",
                                  reason="INVALID_PAGE_TOKEN")
        offset = int(position)
    return text, bias, size, offset


def geocode_to_pb(candidates: list[domain.Candidate], text: str,
                  bias: tuple[float, float] | None, size: int,
                  offset: int) -> pb.GeocodeResponse:
    out = pb.GeocodeResponse()
    for c in candidates[:size]:
        item = out.candidates.add(label=c.label, kind=KIND_TO_PB[c.kind],
                                  confidence=round(c.confidence, 4),
                                  interpolated=c.interpolated)
        item.location.latitude, item.location.longitude = c.lat, c.lon
    if len(candidates) > size:
        out.next_page_token = encode_cursor(float(offset + size), "page", _scope(text, bias))
    return out


def reverse_from_pb(request: pb.ReverseGeocodeRequest) -> tuple[float, float, float | None]:
    lat, lon = location_from_pb(request.location, request.HasField("location"), "location")
    limit = request.max_distance_meters
    if limit == 0:
        return lat, lon, None
    if not (math.isfinite(limit) and 1.0 <= limit <= 1000.0):
        raise InvalidArgument("max_distance_meters", "must be in 1..1000 (0 means 100)")
    return lat, lon, limit


def reverse_to_pb(answer: domain.ReverseAnswer) -> pb.ReverseGeocodeResponse:
    out = pb.ReverseGeocodeResponse(label=answer.label, kind=KIND_TO_PB[answer.kind],
                                    distance_meters=round(answer.distance_m, 2))
    out.location.latitude, out.location.longitude = answer.lat, answer.lon
    return out


def info_to_pb(counts: dict[str, int], memory: int,
               sources: tuple[str, ...]) -> pb.GetGazetteerInfoResponse:
    return pb.GetGazetteerInfoResponse(
        counts=[pb.KindCount(kind=KIND_TO_PB[k], count=counts.get(k, 0))
                for k in domain.KINDS],
        memory_bytes=memory, sources=list(sources))
