"""``geoplex maps simulate``: run the navigation simulator and print what it saw."""

from __future__ import annotations

import argparse
import asyncio
import json

from geoplex.tools.output import print_error, print_table

from .results import TICK_HEADERS, Tick, summary_rows, table_ticks, tick_row
from .run import NavConfig, NavResult, simulate
from .scenario import NoScenario, road_classes


def progress_line(k: Tick) -> str:
    route = "detour" if k.detour else "arterial"
    return (f"t={k.t:5.0f} s  {k.phase:<10}  probe {k.probe_eta_s:4.0f} s "
            f"({k.probe_ratio - 1:+4.0%})  trip {k.trip_eta_s:4.0f} s via {route:<8}  "
            f"on the road {k.on_arterial:2d}  fixes {k.fixes:,}  batches {k.batches:,}  "
            f"rejected {k.rejected:,}")


def _classes(region: str) -> dict[int, str] | None:
    """The OSM classes of the region's roads, from its network file (Gothenburg only)."""
    if region != "gothenburg":
        return None
    from geoplex.infra import data

    try:
        paths = data.fetch(["gothenburg"], progress=lambda m: print(f"  {m}", flush=True))
    except data.DataError as exc:
        print(f"note: road classes unknown ({exc}); any named road may be the arterial",
              flush=True)
        return None
    return road_classes(paths["gothenburg"]["network"])


def print_result(result: NavResult) -> None:
    print()
    print_table(TICK_HEADERS, [tick_row(k) for k in table_ticks(result.ticks)])
    print()
    c, a = result.counters, result.accuracy
    rows = [*summary_rows(result.summary, result.config.timeline),
            ("fixes sent / accepted / rejected", f"{c.fixes:,} / {c.accepted:,} / {c.rejected:,}"
                                                 + (f" {c.reasons}" if c.reasons else "")),
            ("batches answered / failed", f"{c.batches:,} / {c.failed:,}"
                                          + (f" ({c.first_error})" if c.first_error else "")),
            ("trips", f"{c.trips:,}")]
    if a.drivers:
        rows.append(("map matching (MatchTrace)",
                     f"{a.share:.1%} of {a.fixes:,} fixes on the road driven"
                     + (f", {a.slowed_share:.1%} of {a.slowed_fixes:,} crawling in the jam"
                        if a.slowed_fixes else "") + f" ({a.drivers} drivers)"))
    print_table(("measure", "value"), rows)


def run_simulate(args: argparse.Namespace) -> int:
    from geoplex.servers._runtime.auth import auth_secret
    from geoplex.servers._runtime.config import ConfigError

    try:
        config = NavConfig(
            maps=args.maps, routing=args.routing, auth_secret=auth_secret(),
            drivers=args.drivers, congestion_start_s=args.congestion_start,
            congestion_s=args.congestion_seconds, fraction=args.fraction,
            duration_s=args.duration, seed=args.seed,
            stop_after_recovery_s=args.stop_after_recovery,
            stop_after_rise_s=args.stop_after_rise)
        config.check()
    except (ConfigError, ValueError) as exc:
        return print_error(exc)
    classes = _classes(config.region)
    try:
        result = asyncio.run(simulate(
            config, classes=classes, say=lambda m: print(m, flush=True),
            progress=lambda k: print(progress_line(k), flush=True)))
    except NoScenario as exc:
        return print_error(exc, 1)
    print_result(result)
    if args.out:
        args.out.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0 if not result.counters.failed else 1
