"""The sandbox's messages: one record per kind, read strictly from a frame's list.

Every kind makes the round trip through JSON (as the wire carries it) and is read back as
the same record. A malformed list is refused with the typed error of its conversation
(``WireError``; ``ValueError`` for a worker's start report) and never with an
``IndexError`` or ``TypeError`` of the reading code. The last test replays malformed frames
through the real host: a hostile worker that forges one is stopped as a protocol breaker.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Hosts, Installer
from services_ai_plugins import PluginHost, SandboxPolicy
from services_ai_plugins._sandbox._messages import (
    ApiCall,
    ApiRaise,
    ApiResult,
    Call,
    Exit,
    Failed,
    Fork,
    Forked,
    Hello,
    Log,
    Raise,
    Ready,
    Result,
    RouteCall,
    Status,
    Stop,
    Unexpected,
    Wait,
    read_during_call,
    read_from_host,
    read_hello,
    read_start,
    read_zygote_answer,
    read_zygote_request,
)
from services_ai_plugins.errors import WireError
from services_ai_plugins.events import Context
from services_ai_plugins_testing.fakes import FakeHostServices

CALL_ID = 7

HOOK = {
    "name": "lead_created",
    "argnames": ["lead", "api"],
    "kwargnames": [],
    "tryfirst": False,
    "trylast": True,
    "optionalhook": False,
    "hookwrapper": False,
    "wrapper": False,
}


def wired(frame: list[Any]) -> list[Any]:
    """``frame`` as the other side reads it: through JSON."""
    return cast("list[Any]", json.loads(json.dumps(frame)))


ROUND_TRIPS: list[tuple[Any, Callable[[list[Any]], Any]]] = [
    (Call(CALL_ID, "lead_created", "acme", {"lead": {"$r": "Lead"}}, True), read_from_host),
    (RouteCall(CALL_ID, 3, None, {"request": None}, True), read_from_host),
    (Stop(), read_from_host),
    (ApiResult(CALL_ID, [1, {"$t": [2]}]), read_from_host),
    (ApiRaise(CALL_ID, "PermissionDenied", "no", {"permission": "read_leads"}), read_from_host),
    (Log(logging.WARNING, "stdout", "hello"), lambda frame: read_during_call(frame, CALL_ID)),
    (ApiCall(CALL_ID, "store_get", ["k"], {}), lambda frame: read_during_call(frame, CALL_ID)),
    (Result(CALL_ID, {"$d": {"$x": 1}}), lambda frame: read_during_call(frame, CALL_ID)),
    (Raise(CALL_ID, "ValueError", "bad", "Traceback..."), lambda f: read_during_call(f, CALL_ID)),
    (Log(logging.INFO, "plugin", "importing"), read_start),
    (Ready(41, [HOOK], ("landlock", "seccomp"), ["a note"]), read_start),
    (Failed("ImportError", "no module", "Traceback..."), read_start),
    (Fork(1, {"plugin_id": "p"}), read_zygote_request),
    (Wait(2, 4242), read_zygote_request),
    (Exit(), read_zygote_request),
    (Hello(12, {"system": "Linux"}), read_hello),
    (Forked(3, 5151), lambda frame: read_zygote_answer(frame)[1]),
    (Status(4, 5151, 9), lambda frame: read_zygote_answer(frame)[1]),
    (Status(4, 5151, None), lambda frame: read_zygote_answer(frame)[1]),
]


@pytest.mark.parametrize(
    ("record", "read"), ROUND_TRIPS, ids=[type(record).__name__ for record, _ in ROUND_TRIPS]
)
def test_every_kind_makes_the_round_trip(record: Any, read: Callable[[list[Any]], Any]) -> None:
    frame = wired(record.to_frame())
    assert frame[0] == record.KIND
    assert read(frame) == record


def test_a_zygote_answer_says_which_request_it_answers() -> None:
    assert read_zygote_answer(wired(Forked(9, 100).to_frame())) == (9, Forked(9, 100))
    number, answer = read_zygote_answer(["forked", 9, -1])  # no pid a worker could have
    assert number == 9
    assert answer == Unexpected("forked", ["forked", 9, -1])


def test_a_log_line_is_made_a_level_a_name_and_a_text() -> None:
    """What a worker put in a log frame is not trusted: the level falls back to INFO, the
    logger's name is cut, the text is made a text."""
    line = read_during_call(["log", 10**9, "n" * 500, ["not", "text"]], CALL_ID)
    assert line == Log(logging.INFO, "n" * 100, "['not', 'text']")


def test_a_frame_of_another_call_is_refused_naming_both() -> None:
    with pytest.raises(WireError, match="frame of call 6 came during call 7"):
        read_during_call(["ok", 6, None], CALL_ID)
    with pytest.raises(WireError, match="of call '7' came during call 7"):
        read_during_call(["ok", "7", None], CALL_ID)


def test_unknown_frames_from_the_host_are_refused_in_the_worker() -> None:
    with pytest.raises(WireError, match="unexpected 'boom' frame from the host"):
        read_from_host(["boom"])


def test_a_ready_report_is_read_strictly() -> None:
    good = Ready(1, [HOOK], ("landlock",), []).to_frame()
    refusals = {
        "is not \\['ready'": ["ready"],
        "has the fields": ["ready", {**good[1], "extra": 1}],
        "pid is not a number": ["ready", {**good[1], "pid": "1"}],
        "layer '\\$x' is not a plain": ["ready", {**good[1], "layers": ["$x"]}],
        "notes are not a list": ["ready", {**good[1], "notes": "x"}],
        "reported twice": ["ready", {**good[1], "hooks": [HOOK, HOOK]}],
        "options must be true or false": ["ready", {**good[1], "hooks": [HOOK | {"wrapper": 1}]}],
    }
    for match, frame in refusals.items():
        with pytest.raises(ValueError, match=match):
            read_start(wired(frame))


# -- malformed lists: the typed error, never a crash of the reader --------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
kinds = st.sampled_from(
    ["ok", "raise", "api", "log", "ready", "failed", "forked", "status", "hello", "x"]
)
frames = st.builds(lambda kind, rest: [kind, *rest], kinds, st.lists(json_values, max_size=6))
near_misses = st.builds(  # a frame of the right kind and id with its items changed
    lambda kind, rest: [kind, CALL_ID, *rest],
    st.sampled_from(["ok", "raise", "api"]),
    st.lists(st.one_of(st.text(max_size=3), json_values), max_size=5),
)


@given(st.one_of(frames, near_misses))
def test_a_malformed_frame_during_a_call_is_refused_with_a_wire_error(frame: list[Any]) -> None:
    """Either a record that writes exactly the frame it came from (a log line is made
    well-formed instead), or a WireError."""
    try:
        record = read_during_call(frame, CALL_ID)
    except WireError:
        return
    if isinstance(record, Log):
        assert type(record.level) is int
        assert type(record.name) is str
        assert type(record.text) is str
    else:
        assert isinstance(record, (ApiCall, Result, Raise))
        assert record.to_frame() == frame


@given(frames)
def test_a_malformed_start_report_is_refused_with_a_value_error(frame: list[Any]) -> None:
    try:
        record = read_start(frame)
    except ValueError:
        assert frame[0] == "ready"
        return
    if isinstance(record, (Ready, Failed)):
        assert record.to_frame() == frame
    elif isinstance(record, Unexpected):
        assert record.frame is frame


@given(frames)
def test_a_malformed_zygote_answer_is_unexpected(frame: list[Any]) -> None:
    _, answer = read_zygote_answer(frame)
    if isinstance(answer, (Forked, Status)):
        assert answer.to_frame() == frame
        if isinstance(answer, Forked):
            assert answer.pid > 0
    else:
        assert answer == Unexpected(frame[0], frame)


@given(st.one_of(frames, st.builds(lambda info: ["hello", info], json_values)))
def test_a_malformed_hello_is_refused_with_a_wire_error(frame: list[Any]) -> None:
    try:
        hello = read_hello(frame)
    except WireError:
        return
    assert hello.to_frame() == frame


# -- through the real host ------------------------------------------------------------------------

HEADER = (
    "import json, struct, time\n"
    "from services_ai_plugins import hookimpl\n\n\n"
    "def forge(api, frame):\n"
    "    '''Write ``frame`` (a list; None: the call's id) on the worker's channel.'''\n"
    "    frame = [api._call.id if item is None else item for item in frame]\n"
    "    body = json.dumps(frame).encode()\n"
    "    api._worker.channel.sock.sendall(struct.pack('>I', len(body)) + body)\n\n\n"
    "class Plugin:\n"
)


@pytest.fixture
def install(tmp_path: Path) -> Installer:
    return Installer(tmp_path, HEADER)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the process sandbox needs fork")
@pytest.mark.parametrize(
    ("frame", "cause"),
    [
        (["raise", None, "ValueError", "forged", 5], "a malformed 'raise' frame"),
        (["raise", None, "ValueError"], "a malformed 'raise' frame"),
        (["ok", None], "a malformed 'ok' frame"),
        (["ok", None, 1, 2], "a malformed 'ok' frame"),
        (["api", None, "store_set", ["k", 1]], "a malformed 'api' frame"),
        (["log", 20, "stdout"], "a 'log' frame of call 20 came during call"),
        (["ok", -1, None], "a 'ok' frame of call -1 came during call"),
    ],
)
def test_a_worker_forging_a_malformed_message_is_stopped(
    hosts: Hosts,
    install: Installer,
    services: FakeHostServices,
    frame: list[Any],
    cause: str,
) -> None:
    """The frame is read into its record before the host acts on it: a malformed one is a
    protocol violation (the worker stopped, the failure recorded), and nothing it asked for
    is done."""
    host = cast("PluginHost", hosts(sandbox=SandboxPolicy(timeout=10.0)))
    install(
        host,
        "forger",
        f"""
        @hookimpl
        def lead_created(self, lead, api):
            forge(api, {frame!r})
            time.sleep(30)
        """,
    )
    lead = services.make_lead("acme", name="Ada")
    host.hook.lead_created(lead=lead, context=Context(tenant="acme"))
    [failure] = host.failures("forger")
    assert failure.exc_type == "SandboxError"
    assert "its worker broke the protocol" in failure.message
    assert cause in failure.message
    assert services.stored("acme", "forger") == {}
    # acme's worker was stopped (the next call starts another); the tenant-less one is untouched
    assert [w.tenant for w in host.sandbox.workers()] == [None]
