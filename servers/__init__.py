"""Geoplex servers: one package per service over the shared runtime in ``_runtime``."""
