"""Per-account state shared by a worker's request threads: the registry's
idle sweep and the replies remembered for retried frames."""
from __future__ import annotations

import threading
import time

import numpy as np

from worker.accounts import MAX_STREAMS_REMEMBERED, Accounts
from worker.audio import Audio
from worker.pipeline import Frame, FramePipeline
from worker.storage.framelog import FrameLog
from worker.vad import SileroOnnx, VadEngine, VadParams

IDLE_SECONDS = 0.05


def let_idle_time_pass(since: float) -> None:
    while time.monotonic() - since <= 2 * IDLE_SECONDS:
        time.sleep(IDLE_SECONDS / 5)


def test_an_account_fetched_for_a_frame_survives_an_idle_sweep():
    """A thread fetched the account and has not locked it yet (it waits for
    the locks of the other accounts of its batch) when a sweep runs: the
    account keeps its VAD state, and the next fetch returns the same one."""
    accounts = Accounts(idle_seconds=IDLE_SECONDS)
    fetched = accounts.get("a")
    fetched.vad_stream(16000).triggered = True  # speech on: state that must not be reset
    let_idle_time_pass(time.monotonic())
    accounts.get("b")  # another request thread: its fetch runs the sweep
    again = accounts.get("a")
    assert again is fetched and again.vad is not None and again.vad.triggered


def test_an_account_nobody_holds_is_forgotten_after_idle_seconds():
    accounts = Accounts(idle_seconds=IDLE_SECONDS)
    with accounts.hold(["a"]) as held:
        first = held["a"]
    let_idle_time_pass(time.monotonic())
    with accounts.hold(["b"]):
        pass
    assert len(accounts) == 1  # only b
    with accounts.hold(["a"]) as held:
        assert held["a"] is not first


def test_fetching_an_account_leaves_its_replies_to_the_thread_holding_it():
    """Replies are read and written under the account's lock; a fetch by
    another thread must not trim them meanwhile (that raised KeyError in
    Account.replayed, or 'dictionary changed size during iteration', and the
    whole batch failed)."""
    accounts = Accounts()
    account = accounts.get("acct")
    limit = MAX_STREAMS_REMEMBERED
    with account.lock:  # a frame of this account is being processed
        for i in range(limit + 5):
            account.remember(f"stream{i}", 1, {"voice": 0})
        before = dict(account.replies)
        other = threading.Thread(target=accounts.get, args=("acct",))
        other.start()
        other.join()
        assert account.replies == before
    assert len(account.replies) == limit
    assert f"stream{limit + 4}" in account.replies and "stream0" not in account.replies


def test_the_stream_dropped_first_is_the_one_unused_longest():
    account = Accounts().get("acct")
    with account.lock:
        for i in range(MAX_STREAMS_REMEMBERED):
            account.remember(f"stream{i}", 1, {"voice": 0})
        account.remember("stream0", 2, {"voice": 1})  # the first stream is still sending
        account.remember("new", 1, {"voice": 0})
        assert "stream0" in account.replies and "stream1" not in account.replies
        assert account.replayed("stream0", 2) == {"voice": 1, "duplicate": True}


def test_many_streams_of_one_account_from_many_threads(tmp_path):
    """Request threads process frames of one account over more streams than
    are remembered, through the real pipeline: every frame gets a reply."""
    pipeline = FramePipeline(7001, VadEngine(SileroOnnx(), VadParams()), FrameLog(tmp_path), Accounts())
    audio = Audio(np.zeros(16, np.float32), 16000)  # less than a VAD chunk: no model call
    errors: list[BaseException] = []
    replies: list[int] = []

    def frames(thread: int) -> None:
        try:
            for i in range(300):
                [reply] = pipeline.process_many([Frame("acct", audio, f"t{thread}-{i % 40}", i)])
                assert "error" not in reply, reply
                replies.append(1)
        except BaseException as exc:  # noqa: B036 - any failure of a thread fails the test
            errors.append(exc)
    threads = [threading.Thread(target=frames, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(replies) == 8 * 300
    assert len((tmp_path / "acct.txt").read_text().splitlines()) == 8 * 300
