"""``geoplex notifier ...`` against a real notifier node: silences added, listed and
expired, alerts and the notification log as tables, errors as one line; and the same
silence commands hung under another command group."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from geoplex.clients.notifier import NotifierClient, alert
from geoplex.notifier.v1 import notifier_pb2 as pb
from geoplex.tools.cli import build_parser, main
from geoplex.tools.commands import command_group
from geoplex.tools.notifier_cli import add_silence_commands

from notifier_setup import unique
from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def post(address: str, labels: dict[str, str]) -> None:
    async def go() -> None:
        async with NotifierClient(address) as nf:
            await nf.post_alerts([alert(labels, starts_at=time.time())])

    asyncio.run(go())


def test_silences_are_added_listed_and_expired_from_the_command_line(
        notifiers: list[ServerProcess], capsys: pytest.CaptureFixture[str]) -> None:
    target = notifiers[0].address
    test = unique()
    code, out, _ = run(capsys, "notifier", "silence-add", f"test={test}",
                       'alertname=~"Disk.*"', "--duration", "30m", "--comment",
                       "swapping disks", "--author", "alice", "--target", target)
    assert code == 0 and out.startswith("silence ") and "active until" in out
    silence_id = out.split()[1]
    code, out, _ = run(capsys, "notifier", "silences", "--filter", f'{{test="{test}"}}',
                       "--target", target)
    assert code == 0
    header, rule, row = out.splitlines()[:3]
    assert header.split()[:3] == ["id", "state", "matchers"] and set(rule) <= {"-", " "}
    assert row.startswith(silence_id) and "active" in row and "alice" in row
    assert 'alertname=~"Disk.*"' in row and "swapping disks" in row

    post(target, {"alertname": "DiskFull", "test": test})
    code, out, _ = run(capsys, "notifier", "alerts", "--all", "--filter",
                       f'{{test="{test}"}}', "--target", target)
    assert code == 0 and "DiskFull" in out and "suppressed" in out
    assert f"silence {silence_id}" in out

    code, out, _ = run(capsys, "notifier", "silence-expire", silence_id, "--by", "bob",
                       "--target", target)
    assert code == 0 and f"silence {silence_id} expired" in out
    code, out, _ = run(capsys, "notifier", "silences", "--filter", f'{{test="{test}"}}',
                       "--target", target)
    assert "no silences" in out
    code, out, _ = run(capsys, "notifier", "silences", "--expired", "--filter",
                       f'{{test="{test}"}}', "--target", target)
    assert silence_id in out and "expired" in out


def test_the_notification_log_prints_as_a_table(notifiers: list[ServerProcess],
                                                capsys: pytest.CaptureFixture[str],
                                                delivering: None) -> None:
    target = notifiers[0].address
    test = unique()
    post(target, {"alertname": "Printed", "test": test})

    async def logged() -> bool:
        async with NotifierClient(target) as nf:
            page = await nf.list_notifications("hook", page_size=1000)
            return any(test in n.group_key and n.state == pb.DELIVERY_STATE_DELIVERED
                       for n in page.notifications)

    asyncio.run(eventually(logged, 15, what="the notification in the log"))
    code, out, _ = run(capsys, "notifier", "notifications", "--receiver", "hook", "--limit",
                       "1000", "--target", target)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["sent", "receiver", "integration", "kind", "state",
                                "attempts", "alerts", "node", "error"]
    assert any(line.split()[1:8] == ["hook", "webhook", "firing", "delivered", "1", "1",
                                     "notifier-1"] for line in lines[2:])


def test_errors_are_one_line(notifiers: list[ServerProcess],
                             capsys: pytest.CaptureFixture[str]) -> None:
    target = notifiers[0].address
    code, _, err = run(capsys, "notifier", "silence-expire", "0" * 32, "--target", target)
    assert code == 1 and err.startswith("geoplex: NOT_FOUND: ") and len(err.splitlines()) == 1
    code, _, err = run(capsys, "notifier", "silence-add", 'env=""', "--comment", "x",
                       "--target", target)
    assert code == 1 and "INVALID_ARGUMENT" in err and "silence.matchers" in err
    code, _, err = run(capsys, "notifier", "silence-add", "env=~(", "--comment", "x",
                       "--target", target)
    assert code == 2 and "not a regular expression" in err  # checked before any call
    code, _, err = run(capsys, "notifier", "silence-add", "nomatcher", "--comment", "x",
                       "--target", target)
    assert code == 2 and "not a matcher" in err
    code, _, err = run(capsys, "notifier", "silence-add", "a=b", "--comment", "x",
                       "--duration", "soon", "--target", target)
    assert code == 2 and "duration" in err


@pytest.mark.parametrize("command", ["alerts", "silences", "silence-add", "silence-expire",
                                     "notifications"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["notifier", command, "--help"])
    assert exited.value.code == 0
    assert f"geoplex notifier {command}" in capsys.readouterr().out


def test_the_silence_commands_hang_under_another_group(
        notifiers: list[ServerProcess], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="geoplex")
    group = command_group(parser.add_subparsers(dest="command"), "telemetry", help="x",
                          description="x")
    add_silence_commands(group, target_flag="--notifier")
    args = parser.parse_args(["telemetry", "silences", "--notifier", notifiers[0].address])
    assert args.func(args) == 0
    assert "id" in capsys.readouterr().out
    for command in ("silences", "silence-add", "silence-expire", "notifications"):
        with pytest.raises(SystemExit):
            parser.parse_args(["telemetry", command, "--help"])
        assert f"geoplex telemetry {command}" in capsys.readouterr().out
