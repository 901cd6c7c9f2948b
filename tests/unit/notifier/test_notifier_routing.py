"""The routing tree: first match, ``continue``, inheritance, and aggregation groups."""

from __future__ import annotations

from geoplex.servers.notifier.domain import NotifierState, PostedAlert, group_key

from notifier_trees import T0, alerting

TREE = """
route:
  receiver: ops
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['severity="page"']
      receiver: pager
      continue: true
      group_wait: 1s
    - matchers: ['service=~"api|maps"']
      receiver: api
      routes:
        - matchers: ['env="prod"']
          receiver: api-prod
          group_by: ['...']
    - matchers: ['service="api"']
      receiver: never
    - match: {team: db}
      receiver: db
receivers: [{name: ops}, {name: pager}, {name: api}, {name: api-prod}, {name: never},
            {name: db}]
"""


def receivers(labels: dict[str, str]) -> list[str]:
    return [route.receiver for route in alerting(TREE).route.match(labels)]


def test_an_alert_no_child_route_matches_stays_at_the_root() -> None:
    assert receivers({"alertname": "X", "service": "routing"}) == ["ops"]


def test_the_first_matching_child_wins_and_later_siblings_are_not_tried() -> None:
    # service="api" matches the api route and the "never" route after it: api wins
    assert receivers({"alertname": "X", "service": "api"}) == ["api"]


def test_continue_goes_on_to_the_next_matching_siblings() -> None:
    assert receivers({"alertname": "X", "severity": "page", "service": "maps"}) == [
        "pager", "api"]
    assert receivers({"alertname": "X", "severity": "page"}) == ["pager"]


def test_the_deepest_matching_route_takes_the_alert() -> None:
    assert receivers({"alertname": "X", "service": "api", "env": "prod"}) == ["api-prod"]
    assert receivers({"alertname": "X", "service": "api", "env": "dev"}) == ["api"]


def test_the_older_match_form_is_read_too() -> None:
    assert receivers({"alertname": "X", "team": "db"}) == ["db"]


def test_children_inherit_what_they_do_not_set() -> None:
    root = alerting(TREE).route
    pager, api, _, _ = root.routes
    (prod,) = api.routes
    assert (pager.group_wait, api.group_wait, prod.group_wait) == (1.0, 10.0, 10.0)
    assert pager.group_by == api.group_by == ("alertname",)
    assert prod.group_by_all and prod.group_interval == root.group_interval == 300.0
    assert len({route.key for route in root.walk()}) == 6


def test_group_labels_take_the_group_by_labels_or_all_of_them() -> None:
    root = alerting(TREE).route
    labels = {"alertname": "X", "service": "api", "env": "prod", "instance": "a"}
    (prod,) = root.match(labels)
    assert prod.group_labels(labels) == labels
    assert root.group_labels(labels) == {"alertname": "X"}
    assert root.group_labels({"severity": "x"}) == {}  # a missing label is not grouped on


def test_alerts_with_the_same_group_labels_share_one_group_per_route() -> None:
    config = alerting(TREE)
    state = NotifierState(config.route)
    state.put([PostedAlert({"alertname": "HighLatency", "instance": "a"}, starts_at=T0),
               PostedAlert({"alertname": "HighLatency", "instance": "b"}, starts_at=T0),
               PostedAlert({"alertname": "DiskFull", "instance": "a"}, starts_at=T0),
               PostedAlert({"alertname": "HighLatency", "severity": "page",
                            "service": "api"}, starts_at=T0)], T0)
    sizes = {key: len(g.fingerprints) for key, g in state.groups.items()}
    root = config.route
    assert sizes[group_key(root, {"alertname": "HighLatency"})] == 2
    assert sizes[group_key(root, {"alertname": "DiskFull"})] == 1
    pager, api = root.routes[0], root.routes[1]
    assert sizes[group_key(pager, {"alertname": "HighLatency"})] == 1
    assert sizes[group_key(api, {"alertname": "HighLatency"})] == 1
    assert len(sizes) == 4


def test_a_group_waits_group_wait_before_its_first_flush() -> None:
    config = alerting(TREE)
    state = NotifierState(config.route)
    state.put([PostedAlert({"alertname": "A", "severity": "page"}, starts_at=T0)], T0)
    assert state.due(T0 + 0.9) == []
    assert [g.route.receiver for g in state.due(T0 + 1.0)] == ["pager"]
    assert state.next_deadline(T0) == T0 + 1.0
