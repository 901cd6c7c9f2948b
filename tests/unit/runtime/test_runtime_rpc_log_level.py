"""Which finished calls the access log shows at INFO."""

from __future__ import annotations

import logging

import grpc

from geoplex.servers._runtime.interceptors import rpc_log_level

FETCH = "/geoplex.broker.v1.ReplicaService/ReplicaFetch"


def test_replication_long_polls_are_debug_unless_they_fail() -> None:
    assert rpc_log_level(FETCH, grpc.StatusCode.OK) == logging.DEBUG
    assert rpc_log_level(FETCH, grpc.StatusCode.UNAVAILABLE) == logging.INFO


def test_every_other_call_is_info() -> None:
    for method in ("/geoplex.broker.v1.BrokerService/Produce",
                   "/geoplex.maps.v1.MapsService/Geocode"):
        assert rpc_log_level(method, grpc.StatusCode.OK) == logging.INFO
