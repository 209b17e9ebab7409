"""What only a terminal shows, seen through tmux: the live status line never wraps, warnings
go above it, Ctrl-C leaves nothing stale, and an idle terminal stdin gets a hint."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from .helpers import COMMAND

ROOT = pathlib.Path(__file__).parent.parent
SAMPLE = ROOT / "sample_data" / "orders.jsonl"
WIDTH = 60

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

#: A producer of slow input with a bad line now and then; it ignores Ctrl-C, as a shell's
#: upstream command may, so only ordertimeout's reaction is seen.
PRODUCER = """
import json, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
for i in range(100000):
    if i % 40 == 5:
        print("garbage line", flush=True)
    print(json.dumps({"userId": str(i % 7), "type": "create", "ts": i * 10}), flush=True)
    time.sleep(0.01)
"""


class Tmux:
    """A detached tmux session on its own server, WIDTH columns wide, running one command."""

    def __init__(self, command: str, tmp_path: pathlib.Path) -> None:
        self.socket = f"ordertimeout-test-{uuid.uuid4().hex[:8]}"
        env = f"PYTHONPATH={shlex.quote(str(ROOT))} TERM=xterm-256color"
        self.done = tmp_path / "exit-status"
        script = f"cd {shlex.quote(str(tmp_path))} && {env} {command}; echo $? > {shlex.quote(str(self.done))}; sleep 60"
        subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-x", str(WIDTH), "-y", "30",
                        "bash", "--norc", "--noprofile", "-c", script], check=True, env={**os.environ, "TMUX": ""})

    def screen(self) -> list[str]:
        text = subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p", "-t", "0"],
                              capture_output=True, check=True, text=True).stdout
        return text.rstrip("\n").splitlines()

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", "-t", "0", *keys], check=True)

    def wait_for(self, predicate, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError("screen never got there:\n" + "\n".join(screen))
            time.sleep(0.1)

    def exit_status(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while not (self.done.exists() and self.done.read_text().strip()):
            if time.monotonic() > deadline:
                raise AssertionError("the command never ended:\n" + "\n".join(self.screen()))
            time.sleep(0.1)
        return int(self.done.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path):
    sessions = []

    def start(command: str) -> Tmux:
        session = Tmux(command, tmp_path)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.close()


def ordertimeout(*args: str) -> str:
    return " ".join(shlex.quote(part) for part in [*COMMAND, *args])


def producer(tmp_path: pathlib.Path) -> str:
    (tmp_path / "producer.py").write_text(PRODUCER)
    return f"{shlex.quote(sys.executable)} producer.py"


def test_status_line_is_cropped_and_warnings_go_above_it(tmux, tmp_path):
    session = tmux(f"{producer(tmp_path)} | {ordertimeout('watch', '--json')} > out.jsonl")
    screen = session.wait_for(lambda s: sum("not valid JSON" in line for line in s) >= 3 and "ev/s" in s[-1])
    status = screen[-1]
    assert len(status) <= WIDTH - 1 and status.endswith("…")  # cropped, never wrapped
    assert sum("ev/s" in line for line in screen) == 1  # one status line, no stale copies
    warnings = [line for line in screen if "ordertimeout: line " in line]
    assert len(warnings) >= 3
    assert all(line.startswith("ordertimeout: line ") for line in warnings)  # each on a line of its own
    assert not any("ev/s" in line for line in screen[:-1])  # never glued to the status line
    session.keys("C-c")
    assert session.exit_status() == 130
    screen = session.screen()
    assert not any("ev/s" in line for line in screen)  # erased on Ctrl-C, ^C and all
    assert any("pending" in line for line in screen)  # the summary came after it


def test_json_piped_to_a_reader_on_the_same_terminal_gets_no_status_line(tmux, tmp_path):
    # stdin is the terminal, so the auto rule keeps the status line off: jq's (here cut's)
    # output on the same screen stays readable. --follow keeps the run going while we look.
    session = tmux(f"{ordertimeout('watch', '--follow', str(SAMPLE), '--within', '15m', '--json')} | cut -c1-50")
    session.wait_for(lambda s: sum(line.startswith('{"result"') for line in s) == 5)  # the last two wait for more event time
    time.sleep(1.0)  # several refresh periods of a status line, were there one
    assert not any("ev/s" in line for line in session.screen())
    session.keys("C-c")
    assert session.exit_status() == 130


def test_watch_on_a_terminal_says_how_to_feed_it_and_reads_what_is_typed(tmux, tmp_path):
    session = tmux(ordertimeout("watch", "--within", "1s", "--fields", ""))
    session.wait_for(lambda s: any("one JSON object per line, Ctrl-D to end" in line for line in s))
    session.keys('{"userId":"u1","type":"create","ts":1000}', "Enter")
    session.keys("C-d")
    assert session.exit_status() == 0
    screen = session.screen()
    assert any(line.startswith("1970-01-01T00:00:02.000Z  timeout    u1") for line in screen)
    assert not any("ev/s" in line for line in screen)  # typing is not garbled by a status line
