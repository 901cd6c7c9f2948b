"""The only module that knows both the maps protobuf messages and its domain types."""

from __future__ import annotations

import math

from google.protobuf.message import DecodeError

from geoplex.clients.maps import fix as fix_message
from geoplex.maps.v1 import maps_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.servers._runtime.latlng import location_from_pb
from geoplex.servers._runtime.paging import decode_cursor, encode_cursor, page_size
from geoplex.servers._runtime.validate import check_id

from . import domain, locations

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
    if not text.isprintable():
        raise InvalidArgument("text", "must be printable text (no control or format "
                                      "characters)")
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


# -- location batches -------------------------------------------------------------------

def _fix_from_pb(f: pb.LocationFix) -> locations.Fix:
    has_location = (f.HasField("location") and f.location.HasField("latitude")
                    and f.location.HasField("longitude"))
    return locations.Fix(
        lat=f.location.latitude if has_location else None,
        lon=f.location.longitude if has_location else None,
        time=f.time.seconds + f.time.nanos / 1e9 if f.HasField("time") else None,
        accuracy_m=f.accuracy_meters,
        speed_mps=f.speed_mps if f.HasField("speed_mps") else None,
        heading_deg=f.heading_degrees if f.HasField("heading_degrees") else None)


def batch_from_pb(batch: pb.LocationBatch, has: bool, field: str = "batch"
                  ) -> tuple[str, list[locations.Fix]]:
    """(batch_id, fixes) of a batch: its id checked, 1..MAX_FIXES fixes (each fix is
    checked on its own later: a bad one is rejected, not the batch)."""
    if not has:
        raise InvalidArgument(field, "is required", reason="REQUIRED_FIELD")
    batch_id = check_id(f"{field}.batch_id", batch.batch_id)
    if not 1 <= len(batch.fixes) <= locations.MAX_FIXES:
        raise InvalidArgument(f"{field}.fixes", f"must hold 1..{locations.MAX_FIXES} fixes",
                              reason="REQUIRED_FIELD" if not batch.fixes else None)
    return batch_id, [_fix_from_pb(f) for f in batch.fixes]


def rejected_to_pb(rejected: list[locations.Rejected], batch: int) -> list[pb.RejectedFix]:
    return [pb.RejectedFix(batch=batch, index=r.index, reason=r.reason) for r in rejected]


def _fix_to_pb(f: locations.Fix) -> pb.LocationFix:
    assert f.lat is not None and f.lon is not None and f.time is not None
    return fix_message((f.lat, f.lon), f.time, accuracy_m=f.accuracy_m, speed_mps=f.speed_mps,
                       heading_deg=f.heading_deg)


def location_record(user: str, batch_id: str, fixes: list[locations.Fix],
                    received: float) -> bytes:
    """The locations topic's record of one accepted batch."""
    record = pb.LocationBatchRecord(user=user, batch_id=batch_id,
                                    fixes=[_fix_to_pb(f) for f in fixes])
    record.received.FromNanoseconds(int(received * 1e9))
    return record.SerializeToString()


def location_record_from(value: bytes) -> tuple[str, str, list[locations.Fix]]:
    """(user, batch_id, fixes) of a locations record; ValueError if it is not one."""
    record = pb.LocationBatchRecord()
    try:
        record.ParseFromString(value)
    except DecodeError as exc:
        raise ValueError("not a LocationBatchRecord") from exc
    if not record.user or not record.batch_id:
        raise ValueError("a LocationBatchRecord without user or batch_id")
    fixes = [_fix_from_pb(f) for f in record.fixes]
    if any(f.lat is None or f.lon is None or f.time is None for f in fixes):
        raise ValueError("a LocationBatchRecord with a fix lacking its location or time")
    return record.user, record.batch_id, fixes


TILE_FORMATS = {pb.TILE_FORMAT_UNSPECIFIED: "png", pb.TILE_FORMAT_PNG: "png",
                pb.TILE_FORMAT_MVT: "mvt"}


def tile_from_pb(request: pb.GetTileRequest) -> tuple[int, int, int, str]:
    """(z, x, y, "png" | "mvt"); the address itself is checked by the tile service."""
    fmt = TILE_FORMATS.get(request.format)
    if fmt is None:
        raise InvalidArgument("format", f"unknown tile format {request.format}",
                              allowed=["TILE_FORMAT_PNG", "TILE_FORMAT_MVT"])
    return request.z, request.x, request.y, fmt
