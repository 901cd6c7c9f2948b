"""The runtime every Geoplex server shares.

- ``config``: GEOPLEX_* variables, read once, one-line errors
- ``errors``: domain errors (pure Python: domain modules import them without gRPC)
- ``geo``: point validation and great-circle distances
- ``paging``: page sizes and opaque cursor tokens
- ``status`` / ``interceptors``: the one mapping of errors to gRPC status, request ids, logs
- ``server``: build, run and stop a grpc.aio server; ``backends``: MongoDB/Redis clients
- ``auth``, ``tracing``, ``metrics`` (each server's own, pushed over OTLP), ``mesh``,
  ``supervisor``

Import from the submodules, so that importing the pure ones never pulls in gRPC.
"""
