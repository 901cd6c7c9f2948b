"""``geoplex auth dev-token``: a bad subject or TTL is a one-line error, never a traceback
or a token that is already expired."""

from __future__ import annotations

import jwt
import pytest

from geoplex.servers._runtime.auth import DEV_SECRET
from geoplex.tools.cli import main


@pytest.fixture(autouse=True)
def _dev_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEOPLEX_AUTH_SECRET", raising=False)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["auth", "dev-token", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("subject", ["", "   ", "\t"])
def test_dev_token_for_an_empty_subject_is_a_one_line_error(
        capsys: pytest.CaptureFixture[str], subject: str) -> None:
    code, out, err = _run(capsys, subject)

    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("geoplex: error: ")
    assert "subject" in err and "Traceback" not in err


@pytest.mark.parametrize("ttl", ["-5", "0"])
def test_dev_token_with_a_ttl_below_one_second_is_a_one_line_error_not_an_expired_token(
        capsys: pytest.CaptureFixture[str], ttl: str) -> None:
    code, out, err = _run(capsys, "alice", "--ttl", ttl)

    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("geoplex: error: ")
    assert "--ttl" in err and ttl in err


def test_dev_token_prints_a_token_for_the_subject_valid_for_the_ttl(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "alice", "--ttl", "60")

    claims = jwt.decode(out.strip(), DEV_SECRET, algorithms=["HS256"], issuer="geoplex")
    assert (code, err) == (0, "")
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 60
