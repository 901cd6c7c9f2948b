"""The operator side of the ``geoplex`` command: up, infra, data, demo data, simulators.

Unlike the SDK (``geoplex.clients``), these tools may import ``geoplex.servers`` and
``geoplex.infra``.
"""
