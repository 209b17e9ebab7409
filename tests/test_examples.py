"""Every shell example of README.md and docs/*.md runs as written.

A ```sh block is an example. Written as a session (``$ command`` lines, each followed by
what it shows), each command runs in a scratch directory holding ``sample_data/`` and the
files the earlier commands of the page made, and what it prints (stdout, then stderr) must
be the lines shown, with the run's elapsed seconds and the scratch directory's path
normalised. Written as plain commands, the block runs as one bash script that must succeed
without a traceback.

An example that cannot run here (a Kafka cluster, a service manager, a command that runs
until stopped, the set-up itself) is marked by an HTML comment on the line before its block:
``<!-- example: not run (why) -->``. Its ``ordertimeout`` commands, and those of every
``ExecStart=`` line of the pages' unit files, are still parsed by the command line itself
(click), so an option that does not exist, or a value it refuses, fails here.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

import click
import pytest

from ordertimeout.cli import main

ROOT = pathlib.Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = ("sh", "bash", "console", "shell")
NOT_RUN = re.compile(r"<!--\s*example:\s*not run\b.*-->")
#: The run's own duration in the summary, "(event time, within 15m, 0.00s)".
ELAPSED = re.compile(r"\b\d+\.\d\ds\)$")


@dataclass
class Block:
    page: str
    line: int
    language: str
    text: str
    marker: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in SHELLS and not NOT_RUN.fullmatch(self.marker)

    @property
    def session(self) -> bool:
        return self.text.startswith("$ ")


def blocks(page: pathlib.Path) -> list[Block]:
    """The fenced code blocks of a page, each with the line before it (its marker)."""
    found, lines = [], page.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[index])
        if fence is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        found.append(Block(page.relative_to(ROOT).as_posix(), index + 1, fence[1],
                           "\n".join(lines[index + 1 : end]) + "\n", before.strip()))
        index = end + 1
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
RUN = [block for block in ALL_BLOCKS if block.runs]


def session(text: str) -> list[tuple[str, list[str]]]:
    """A session's commands (continuation lines joined), each with the lines it shows."""
    steps: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append(([line[2:]], []))
        elif steps and steps[-1][0][-1].endswith("\\") and not steps[-1][1]:
            steps[-1][0].append(line)
        elif steps:
            steps[-1][1].append(line)
    return [("\n".join(command), shown) for command, shown in steps]


@pytest.fixture
def scratch(tmp_path):
    """A directory as a new user's clone has it: the sample data, and `ordertimeout` the
    command of this checkout."""
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    return tmp_path


def run_shell(script: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    define = f'ordertimeout() {{ "{sys.executable}" -m ordertimeout "$@"; }}\nset -o pipefail\n'
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    env = {name: value for name, value in env.items() if not name.startswith("ORDERTIMEOUT_")}
    return subprocess.run(["bash", "-c", define + script], cwd=cwd, env=env, capture_output=True, timeout=120)


def normal(text: str, scratch: pathlib.Path) -> list[str]:
    return [ELAPSED.sub("N.NNs)", line) for line in text.replace(str(scratch), ".").splitlines()]


@pytest.mark.parametrize("block", RUN, ids=[block.name for block in RUN])
def test_every_example_runs_as_written(block, scratch):
    if "jq " in block.text and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    if not block.session:
        done = run_shell(block.text, scratch)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, (
            f"{block.name}: exit {done.returncode}\n{done.stderr.decode()}")
        return
    for command, shown in session(block.text):
        done = run_shell(command, scratch)
        printed = normal(done.stdout.decode(), scratch) + normal(done.stderr.decode(), scratch)
        assert printed == [ELAPSED.sub("N.NNs)", line) for line in shown], f"{block.name}: {command}"


# -- examples that cannot run here: their options are checked --------------------------


def ordertimeout_commands(text: str) -> list[list[str]]:
    """The argument lists of the ``ordertimeout`` commands in a block of shell text or of
    a unit file's ``ExecStart=`` lines."""
    text = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in text.splitlines():
        line = line.split("ExecStart=", 1)[-1]
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for index, word in enumerate(words):
            following = words[index + 1] if index + 1 < len(words) else ""
            # The program, not a value that happens to be its name (--group ordertimeout).
            if word.rsplit("/", 1)[-1] == "ordertimeout" and following in main.commands:
                rest = []
                for part in words[index + 1 :]:
                    if part in ("|", "||", "&&", ";", ">", ">>", "2>", "<") or part.startswith((">", "2>")):
                        break
                    rest.append(part)
                commands.append(rest)
    return commands


def check_options(args: list[str], config: pathlib.Path) -> None:
    """Parse ``ordertimeout ARGS`` as the command would, without running it."""
    args = [str(config) if before == "--config" else arg for before, arg in zip(["", *args], args)]
    name, *rest = args
    # With the group's settings, as a real run has them (click caches a command's help
    # option from the first context it sees: -h must stay in it for later tests).
    context = click.Context(main, info_name="ordertimeout", **main.context_settings)
    command = main.get_command(context, name)
    if command is None:
        raise click.UsageError(f"no such command {name!r}")
    with command.make_context(name, rest, parent=context):
        pass


CHECKED = [(block, args) for block in ALL_BLOCKS if not block.runs
           for args in ordertimeout_commands(block.text) if block.language in (*SHELLS, "ini")]


@pytest.mark.parametrize(("block", "args"), CHECKED, ids=[f"{block.name}:{' '.join(args)[:30]}" for block, args in CHECKED])
def test_examples_not_run_still_use_only_real_options(block, args, tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("ORDERTIMEOUT_"):
            monkeypatch.delenv(name)
    config = tmp_path / "empty.toml"
    config.write_text("")
    # Files the example names (a service's state file, say) stand in as empty files: the
    # check is about options and values, and a parameter may require that its file exists.
    monkeypatch.chdir(tmp_path)
    for arg in args:
        if not arg.startswith("-") and not os.path.isabs(arg) and pathlib.Path(arg).suffix in (".db", ".jsonl", ".gz"):
            (tmp_path / arg).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / arg).touch()
    try:
        check_options(args, config)
    except click.ClickException as error:
        pytest.fail(f"{block.name}: ordertimeout {' '.join(args)}: {error.format_message()}")


def test_every_shell_example_is_run_or_marked_and_the_marked_ones_are_checked():
    shell = [block for block in ALL_BLOCKS if block.language in SHELLS]
    marked = [block for block in shell if not block.runs]
    assert RUN and marked and CHECKED
    # A marker says why, and stands only before a block it applies to.
    for block in marked:
        assert re.search(r"not run \(.+\)", block.marker), f"{block.name}: the marker says why"
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if "<!-- example:" in line:
                assert NOT_RUN.fullmatch(line.strip()), f"{page.name}:{number}: unknown marker {line}"


def test_the_check_of_options_catches_a_misspelt_one(tmp_path):
    """The check can fail: a made-up option, a bad value, and a right command."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    for bad in (["watch", "--whithin", "1s"], ["watch", "--within", "soon"], ["kafka", "--topic"]):
        with pytest.raises(click.ClickException):
            check_options(bad, config)
    check_options(["watch", "x.jsonl", "--within", "15m", "--config", "/etc/nowhere.toml"], config)
    assert ordertimeout_commands("tail -n +1 -F e.jsonl | ordertimeout watch --within 1s # note\n") == [
        ["watch", "--within", "1s"]]
