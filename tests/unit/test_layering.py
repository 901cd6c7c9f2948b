"""STYLE.md: domain modules hold pure logic; they must not import gRPC or protobuf messages."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["geoplex.servers.proximity.domain",
                                    "geoplex.servers.proximity.quadtree",
                                    "geoplex.servers.presence.domain",
                                    "geoplex.servers._runtime.errors",
                                    "geoplex.servers._runtime.paging"])
def test_domain_module_imports_no_grpc_or_generated_messages(module):
    probe = (f"import sys, {module}\n"
             "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'\n"
             "             or m.endswith('_pb2') or m.startswith('google.rpc'))\n"
             "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
