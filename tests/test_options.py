"""Options from the command line, the environment and a --config file; grouped help."""

import itertools
import pathlib

import orjson
import pytest
from click.testing import CliRunner

from ordertimeout.cli import main
from ordertimeout.cli.options import EXIT_STATUS_HELP, OPTION_GROUPS, option_group

ROOT = pathlib.Path(__file__).parent.parent
SAMPLE = ROOT / "sample_data" / "orders.jsonl"

#: Variables of the invoking shell must not leak into these runs.
CLEAN_ENV = {"ORDERTIMEOUT_WITHIN": None, "ORDERTIMEOUT_CONFIG": None, "ORDERTIMEOUT_ONLY": None}


def invoke(args, env=None, input=None):
    return CliRunner().invoke(main, args, env={**CLEAN_ENV, **(env or {})}, input=input, catch_exceptions=False)


def timeouts(outcome):
    return sum(orjson.loads(line)["result"] == "timeout" for line in outcome.stdout.splitlines())


# Of the sample, --within 15m gives 4 timeouts, 2m gives 5, 2h gives 2 and 1s gives 7: each
# source below sets a different window, so the results show which one won.
WITHIN_TIMEOUTS = {"15m": 4, "2m": 5, "2h": 2, "1s": 7}


@pytest.mark.parametrize("given", list(itertools.product([False, True], repeat=3)))
def test_command_line_beats_environment_beats_file_beats_default(tmp_path, given):
    on_command_line, in_environment, in_file = given
    config = tmp_path / "ordertimeout.toml"
    config.write_text('within = "2h"\n' if in_file else "")
    args = ["watch", str(SAMPLE), "--json", "-v", "--config", str(config)]
    if on_command_line:
        args += ["--within", "15m"]
    env = {"ORDERTIMEOUT_WITHIN": "2m"} if in_environment else {}
    outcome = invoke(args, env)
    expected, source = (
        ("15m", "command line") if on_command_line
        else ("2m", "environment ORDERTIMEOUT_WITHIN") if in_environment
        else ("2h", f"config {config}") if in_file
        else ("1s", "default")
    )
    assert outcome.exit_code == 0, outcome.stderr
    assert timeouts(outcome) == WITHIN_TIMEOUTS[expected]
    (line,) = [line for line in outcome.stderr.splitlines() if line.startswith("ordertimeout: --within ")]
    assert line.split()[2] == expected and line.endswith(f"({source})")


def test_verbose_names_the_source_of_every_option(tmp_path):
    config = tmp_path / "shop.toml"
    config.write_text('key = "userId"\nfields = ["orderId"]\nonly = "timeout"\n')
    outcome = invoke(["watch", str(SAMPLE), "--config", str(config), "--json", "--verbose"],
                     env={"ORDERTIMEOUT_MATCH": "next"})
    sources = {}
    for line in outcome.stderr.splitlines():
        if line.startswith("ordertimeout: --"):
            option, value = line.split()[1:3]
            sources[option] = (value, line[line.index("(") + 1 : -1])
    assert sources["--key"] == ("userId", f"config {config}")
    assert sources["--fields"] == ("orderId", f"config {config}")
    assert sources["--match"] == ("next", "environment ORDERTIMEOUT_MATCH")
    assert sources["--json"] == ("on", "command line")
    assert sources["--within"] == ("1s", "default")
    assert sources["--progress"][1] == "default"
    assert {"--within", "--key", "--state", "--lateness", "--stats"} <= set(sources)
    assert all(orjson.loads(line)["result"] == "timeout" for line in outcome.stdout.splitlines())
    assert "ordertimeout: --" not in invoke(["watch", str(SAMPLE), "--json"]).stderr  # only with -v


def test_every_option_reads_its_environment_variable():
    for name, command in main.commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                long = [opt for opt in param.opts if opt.startswith("--")][0]
                wanted = "ORDERTIMEOUT_" + long[2:].upper().replace("-", "_")
                assert param.envvar == wanted or long in ("--sasl-username", "--sasl-password"), (name, long)
    help_text = invoke(["watch", "--help"]).stdout
    assert "ORDERTIMEOUT_TYPE_FIELD" in help_text and "ORDERTIMEOUT_CONFIG" in help_text
    # flags and choices from the environment
    outcome = invoke(["watch", str(SAMPLE)], env={"ORDERTIMEOUT_JSON": "1", "ORDERTIMEOUT_ONLY": "success",
                                                  "ORDERTIMEOUT_WITHIN": "15m", "ORDERTIMEOUT_QUIET": "true"})
    assert [orjson.loads(line)["result"] for line in outcome.stdout.splitlines()] == ["success"] * 3
    assert outcome.stderr == ""


def test_config_file_values_are_read_as_the_command_line_reads_them(tmp_path):
    config = tmp_path / "c.toml"
    # a bare number is seconds, as --within 900 is; booleans set flags; lists join with commas
    config.write_text('within = 900\njson = true\nquiet = true\nonly = "timeout"\n')
    outcome = invoke(["watch", str(SAMPLE), "--config", str(config)])
    assert timeouts(outcome) == 4 and outcome.stderr == ""
    outcome = invoke(["watch", str(SAMPLE)], env={"ORDERTIMEOUT_CONFIG": str(config)})
    assert timeouts(outcome) == 4


@pytest.mark.parametrize("text, message", [
    ('withn = "15m"\n', "no option 'withn' for this command"),
    ('within = "soon"\n', "'soon'"),
    ("within = \n", "is not valid TOML"),
    ('within = {a = 1}\n', "is not a string, number, boolean or list"),
    (b'within = "15m"\n\xff\xfe\n', "is not valid TOML: not UTF-8"),
    ('config = "other.toml"\n', "config = ... cannot name a further file"),
])
def test_a_wrong_config_file_is_a_usage_error_naming_it(tmp_path, text, message):
    config = tmp_path / "c.toml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    outcome = invoke(["watch", "--config", str(config)], input=b"")
    assert outcome.exit_code == 2
    assert message in outcome.stderr
    assert invoke(["watch", "--config", str(tmp_path / "missing.toml")], input=b"").exit_code == 2


def test_a_bad_value_is_reported_with_where_it_came_from(tmp_path):
    """Not the environment variable when the value was in the file, or on the command line."""
    config = tmp_path / "c.toml"
    config.write_text('within = "soon"\n')
    where = {
        "command line": invoke(["watch", "--within", "soon"], input=b"").stderr,
        "environment": invoke(["watch"], env={"ORDERTIMEOUT_WITHIN": "soon"}, input=b"").stderr,
        "file": invoke(["watch", "--config", str(config)], input=b"").stderr,
    }
    assert "Invalid value for '--within': 'soon'" in where["command line"]
    assert "Invalid value for '--within' (env var: 'ORDERTIMEOUT_WITHIN'): 'soon'" in where["environment"]
    assert f"Invalid value for '--within' (config {config}): 'soon'" in where["file"]


def test_help_lists_options_in_groups_with_examples_and_exit_statuses():
    help_text = invoke(["watch", "--help"]).stdout
    sections = [line for line in help_text.splitlines() if line.endswith("options:")]
    assert sections == ["Input options:", "Matching options:", "Time options:", "Output options:",
                        "State and delivery options:", "Other options:"]
    for group, names in (("Input", ["--follow", "--rejects"]), ("Time", ["--time-field", "--lateness"]),
                         ("Matching", ["--within", "--key"]), ("State and delivery", ["--state"])):
        section = help_text.split(f"{group} options:")[1].split("options:")[0]
        for name in names:
            assert name in section, (group, name)
    assert help_text.index("Examples:") > help_text.index("Other options:")  # worked examples in the epilog
    assert EXIT_STATUS_HELP.replace("\b\n", "").splitlines()[1].strip() in help_text
    for status in ("129", "130", "141", "143"):
        assert status in invoke(["--help"]).stdout


def test_the_docs_have_the_same_exit_status_table():
    options = (ROOT / "docs" / "options.md").read_text()
    table = options.split("## Exit status", 1)[1].split("\n## ", 1)[0]
    for code in ("0", "1", "2", "129", "130", "143", "141"):
        assert f"| {code} |" in table, code
        assert f" {code} " in EXIT_STATUS_HELP, code


def test_every_group_is_a_known_group():
    assert list(OPTION_GROUPS) == ["Input", "Matching", "Time", "Output", "State and delivery"]
    for command in main.commands.values():
        for param in command.params:
            if param.param_type_name == "option":
                assert option_group(param) in OPTION_GROUPS


def test_a_command_built_elsewhere_with_plain_click_gets_the_same_treatment():
    import click

    from ordertimeout.cli.options import OrdertimeoutGroup

    @click.command()
    @click.option("--within", default="1s", help="The window.")
    def other(within):
        click.echo(within)

    group = OrdertimeoutGroup()
    group.add_command(other)
    runner = CliRunner()
    assert runner.invoke(group, ["other"], env={"ORDERTIMEOUT_WITHIN": "5m"}).stdout == "5m\n"
    help_text = runner.invoke(group, ["other", "--help"]).stdout
    assert "Matching options:" in help_text and "ORDERTIMEOUT_WITHIN" in help_text and "--config" in help_text


def test_one_config_file_serves_every_command(tmp_path):
    config = tmp_path / "shared.toml"
    config.write_text('within = "15m"\nkey = "userId"\nstate = "x.db"\ninterval = "5ms"\ncount = 4\njson = true\n')
    # simulate has no --key or --state: those are watch's, and left to it
    simulated = invoke(["simulate", "--config", str(config), "--within", "8ms", "-q"])
    assert simulated.exit_code == 0, simulated.stderr
    results = [orjson.loads(line) for line in simulated.stdout.splitlines()]  # json = true was applied
    assert results and all(r["deadline"] - r["created"] == 8 for r in results)  # the command line won
    config.write_text('keyy = "userId"\n')
    assert invoke(["simulate", "--config", str(config), "--count", "0"]).exit_code == 2
