"""Load simulator for PresenceService: N streaming users moving along real roads.

    net = RoadNetwork.gothenburg()                     # ~20 k OSM roads of Gothenburg
    graph = FriendGraph.power_law(1000, seed=1)        # Chung-Lu, mean degree 400
    sim = Simulator(SimConfig(targets=("127.0.0.1:50052",), users=1000), net, graph)
    asyncio.run(load_graph(mongo_uri, database, sim.config, graph))  # friendships + sharing
    result = sim.run()                                 # connect, move, measure; a SimResult

What it models:

- **Friends**: a Chung-Lu random graph with power-law expected degrees
  (exponent 2.5): a few users have far more friends than the mean, most a
  little fewer. The mean is ``min(400, (N - 1) / 2)``: with N users nobody
  can have more than N - 1 friends, and at half of that the graph is already
  dense; the degree actually drawn is reported. It is written to MongoDB with
  ``MongoPresenceStore.add_friendships`` before anyone connects (no AddFriend
  storm), and every user's sharing is turned on in the same pass.
- **Movement**: each user walks (or drives) along the largest connected part
  of the road graph, node to node, picking a random next road at each
  junction (no U-turn unless it is a dead end), at ``speed_mps``. Time is
  accelerated: one update every ``interval_s`` real seconds (jittered +-10 %)
  stands for ``sim_interval_s`` simulated seconds of movement. Users start at
  random road nodes all over the city (about 20 km across), so with the
  default radius of 5 miles most friends are nearby: the fan-out is close to
  its maximum. The nearby fraction is measured and reported.
- **Streams**: every user is one ``LiveSession`` (one bidirectional stream)
  with its own bearer token; about ``users_per_channel`` users share a gRPC
  channel (one HTTP/2 connection). Channels are spread evenly over the server
  *processes* (each one asks MeshService for the pid behind it), so several
  processes behind one SO_REUSEPORT port get equal shares.
- **Latency**: an update carries ``time = now``; a friend's FriendNearby or
  FriendMoved carrying a *newer* ``update_time`` than that friend's last one
  is a fan-out delivery, and ``receive time - update_time`` its end-to-end
  latency (one machine, one clock). Events caused by the *receiver's* own
  move are counted apart as refreshes: the server re-evaluates distances
  when a user moves, sending a friend's known location again with a new
  distance, or a FriendNearby for a friend who came into view with an older
  location (older than the receiver's move, so not a delivery of its own).

The users run in ``processes`` worker processes (default 1), each with its own
event loop, so the client can use more than one core; the calling process only
coordinates and prints progress. Measured: updates sent and accepted, fan-out
deliveries and what was expected (friends within the radius of each update,
from the positions every worker shares in memory), latency percentiles, and the
CPU time of the workers.

The package, by concern: :mod:`.roads` (the road graph and the walks on it),
:mod:`.friends` (the friend graph), :mod:`.store` (writing it to MongoDB),
:mod:`.config` (:class:`SimConfig`), :mod:`.coordinator` (:class:`Simulator`,
in the calling process), :mod:`.worker` (the worker processes) and
:mod:`.results` (:class:`SimResult` and its table).
"""

from geoplex.servers.presence.domain import DEFAULT_RADIUS_M

from .config import SimConfig, new_prefix
from .coordinator import Simulator
from .friends import FriendGraph
from .results import latency_summary_ms, result_rows
from .roads import RoadNetwork, Walker, scheduled_moves
from .store import load_graph, unload_graph

__all__ = [
    "DEFAULT_RADIUS_M",
    "FriendGraph",
    "RoadNetwork",
    "SimConfig",
    "Simulator",
    "Walker",
    "latency_summary_ms",
    "load_graph",
    "new_prefix",
    "result_rows",
    "scheduled_moves",
    "unload_graph",
]
