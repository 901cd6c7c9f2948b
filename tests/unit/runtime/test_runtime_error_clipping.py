"""The error mapping bounds what an error echoes, so trailers always fit a client's 8 KiB.

Also the reusable id check services run at the edge (``validate.check_id``).
"""

from __future__ import annotations

import base64

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.servers._runtime.errors import GeoplexError, InvalidArgument, NotFound
from geoplex.servers._runtime.status import MAX_DETAILS_BYTES, MAX_ECHO_BYTES, clip, to_status
from geoplex.servers._runtime.validate import check_id

TRAILER_BUDGET = 4096  # well under the 8 KiB soft limit


def _decode(error: GeoplexError) -> tuple[grpc.Status, status_pb2.Status]:
    status = to_status(error)
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    return status, status_pb2.Status.FromString(details)


def _wire_size(status: grpc.Status) -> int:
    """grpc-message percent-encoded (at most 3x its bytes), -bin values base64-encoded."""
    size = len("grpc-message") + 3 * len(status.details.encode()) + 32
    for key, value in status.trailing_metadata:
        wire = len(base64.b64encode(value)) if isinstance(value, bytes) else len(value.encode())
        size += len(key) + wire + 32
    return size


def test_clip_keeps_short_text_as_it_is() -> None:
    assert clip("b-1") == "b-1"
    assert clip("x" * MAX_ECHO_BYTES) == "x" * MAX_ECHO_BYTES


def test_clip_cuts_long_text_with_an_ellipsis_and_its_original_length() -> None:
    clipped = clip("x" * 5000)

    assert clipped.startswith("x" * 64)
    assert "\u2026" in clipped and "5000 chars" in clipped
    assert len(clipped.encode()) <= MAX_ECHO_BYTES


def test_clip_never_splits_a_multibyte_character() -> None:
    clipped = clip("\U0001f986" * 5000)

    assert len(clipped.encode()) <= MAX_ECHO_BYTES
    assert clipped.startswith("\U0001f986" * 8)
    clipped.encode("utf-8", "strict")  # no half character left behind


def test_long_metadata_value_is_clipped_in_error_info_and_in_the_message() -> None:
    business_id = "b" * 5000
    status, proto = _decode(NotFound(f"business {business_id!r} not found",
                                     reason="BUSINESS_NOT_FOUND", metadata={"id": business_id}))

    info = error_details_pb2.ErrorInfo()
    assert proto.details[0].Unpack(info)
    assert info.metadata["id"] == clip(business_id)
    assert status.details == f"business '{clip(business_id)}' not found" == proto.message
    assert _wire_size(status) <= TRAILER_BUDGET


def test_long_word_in_a_message_is_clipped_even_without_metadata() -> None:
    status, _ = _decode(NotFound(f"no such thing: {'q' * 5000} (sorry)"))

    assert status.details.startswith("no such thing: qqqq")
    assert status.details.endswith(" (sorry)")
    assert "5000 chars" in status.details


def test_invalid_argument_clips_its_description_and_allowed_values() -> None:
    allowed = [f"value-{n}-" + "v" * 200 for n in range(200)]
    status, proto = _decode(InvalidArgument("id", "x" * 5000 + " is not allowed",
                                            allowed=allowed))

    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert proto.details[0].Unpack(info) and proto.details[1].Unpack(bad)
    assert info.metadata["field"] == "id"
    assert [v.field for v in bad.field_violations] == ["id"]
    assert bad.field_violations[0].description.endswith(" is not allowed")
    assert len(proto.SerializeToString()) <= MAX_DETAILS_BYTES
    assert _wire_size(status) <= TRAILER_BUDGET


def test_many_metadata_entries_are_dropped_before_the_field_and_the_reason() -> None:
    error = InvalidArgument("radius_meters", "bad")
    error.metadata.update({f"key-{n}": "v" * 120 for n in range(500)})

    status, proto = _decode(error)

    info = error_details_pb2.ErrorInfo()
    assert proto.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "geoplex.dev")
    assert info.metadata["field"] == "radius_meters"
    assert len(proto.SerializeToString()) <= MAX_DETAILS_BYTES
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT


_TEXT = st.text(max_size=3000)


@settings(max_examples=60, deadline=None)
@given(message=_TEXT, reason=_TEXT, field=_TEXT, description=_TEXT,
       metadata=st.dictionaries(_TEXT, _TEXT, max_size=30))
def test_trailers_stay_under_budget_whatever_the_error_carries(
        message: str, reason: str, field: str, description: str,
        metadata: dict[str, str]) -> None:
    plain = GeoplexError(message, reason=reason or None, metadata=metadata)
    invalid = InvalidArgument(field, description, reason=reason or None,
                              allowed=list(metadata.values()))
    invalid.metadata.update(metadata)

    for error in (plain, invalid):
        status, proto = _decode(error)
        assert len(proto.SerializeToString()) <= MAX_DETAILS_BYTES
        assert _wire_size(status) <= TRAILER_BUDGET
        assert proto.message == status.details


# -- check_id ------------------------------------------------------------------

def test_check_id_returns_a_good_id() -> None:
    assert check_id("id", "b-1") == "b-1"
    assert check_id("id", "x" * 128) == "x" * 128


@pytest.mark.parametrize(("value", "reason"), [
    ("", "REQUIRED_FIELD"),
    ("x" * 129, "ID_TOO_LONG"),
    ("x" * 5000, "ID_TOO_LONG"),
    ("a\nb", "INVALID_ID"),
    ("a\x00b", "INVALID_ID"),
    ("tab\there", "INVALID_ID"),
])
def test_check_id_refuses_empty_long_or_unprintable_ids(value: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_id("business.id", value)

    assert info.value.field == "business.id"
    assert info.value.reason == reason
    assert value not in info.value.message or value == ""


def test_check_id_takes_a_length_limit() -> None:
    assert check_id("id", "x" * 10, max_len=10) == "x" * 10
    with pytest.raises(InvalidArgument, match=r"1\.\.9 printable characters \(got 10\)"):
        check_id("id", "x" * 10, max_len=9)
