"""The only module that knows both protobuf messages and proximity domain types."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from geoplex.proximity.v1 import proximity_pb2 as pb
from geoplex.servers._runtime.errors import InvalidArgument
from geoplex.type.v1 import geo_pb2

from . import domain
from .domain import Business, SearchPage, SearchQuery

_PB_CACHE_LIMIT = 500_000
_pb_cache: dict[str, tuple[datetime, pb.Business]] = {}


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def business_to_pb(b: Business) -> pb.Business:
    """Memoised per (id, update_time): a search page reuses built messages."""
    cached = _pb_cache.get(b.id)
    if cached is not None and cached[0] == b.update_time and cached[1].name == b.name:
        return cached[1]
    message = pb.Business(
        id=b.id, name=b.name, category=b.category,
        location=geo_pb2.LatLng(latitude=b.lat, longitude=b.lon), address=b.address,
        phone=b.phone, website=b.website, opening_hours=b.opening_hours, owner=b.owner,
        create_time=_ts(b.create_time), update_time=_ts(b.update_time), source=b.source)
    if len(_pb_cache) >= _PB_CACHE_LIMIT:
        _pb_cache.pop(next(iter(_pb_cache)))
    _pb_cache[b.id] = (b.update_time, message)
    return message


def location_from_pb(location: geo_pb2.LatLng, has: bool, field: str) -> tuple[float, float]:
    if not has:
        raise InvalidArgument(field, "is required", reason="REQUIRED_FIELD")
    domain.validate_location(location.latitude, location.longitude, field)
    return location.latitude, location.longitude


def query_from_pb(request: pb.SearchNearbyBusinessesRequest) -> SearchQuery:
    lat, lon = location_from_pb(request.location, request.HasField("location"), "location")
    domain.validate_radius(request.radius_meters)
    query = SearchQuery(
        lat=lat, lon=lon, radius_m=request.radius_meters,
        category=domain.normalise_category(
            domain.validate_text(request.category, "category", limit=64)),
        keyword=domain.validate_text(request.keyword, "keyword", limit=100).lower(),
        page_size=domain.page_size_or_default(request.page_size))
    if request.page_token:
        after = domain.decode_page_token(request.page_token, query)
        query = SearchQuery(query.lat, query.lon, query.radius_m, query.category, query.keyword,
                            query.page_size, after)
    return query


def page_to_pb(page: SearchPage) -> pb.SearchNearbyBusinessesResponse:
    response = pb.SearchNearbyBusinessesResponse(next_page_token=page.next_page_token)
    add = response.businesses.add
    for hit in page.hits:
        add(business=business_to_pb(hit.business), distance_meters=hit.distance_m)
    return response


def draft_from_pb(message: pb.Business, *, need_location: bool) -> Business:
    lat = lon = math.nan
    if message.HasField("location"):
        lat, lon = message.location.latitude, message.location.longitude
    elif need_location:
        raise InvalidArgument("business.location", "is required", reason="REQUIRED_FIELD")
    return Business(id=message.id, name=message.name, category=message.category, lat=lat,
                    lon=lon, address=message.address, phone=message.phone,
                    website=message.website, opening_hours=message.opening_hours)
