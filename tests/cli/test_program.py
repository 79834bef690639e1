"""The command line's own checks: arguments refused before anything is read or sent."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from inbox_poller.cli import main
from inbox_poller.cli.program import build_parser, named_command
from tests.samples import MINIMAL


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--stat", "4711\n"],
        ["submit", "--stat", "4711", "--start", "20261101\n"],
        ["submit", "--stat", "4711", "--end", "20261102\n"],
    ],
)
def test_an_id_or_date_with_a_trailing_newline_is_a_usage_error(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-config.toml"  # never read: the arguments fail first
    assert main(["-c", str(missing), *argv]) == 2
    err = capsys.readouterr().err
    assert "is not a" in err
    assert not (tmp_path / "state").exists()


def test_inspect_email_shows_a_digests_pairing_as_text_and_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    monkeypatch.delenv("INBOX_POLLER_CONFIG", raising=False)
    eml = Path(__file__).parents[1] / "data" / "eml" / "45_digest_two_exports.eml"
    pending = ["--pending", "482913075", "--pending", "590174263"]
    assert main(["inspect-email", str(eml), *pending, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(p["job_id"], p["outcome"]) for p in report["pairing"]] == [
        ("482913075", "matched"),
        ("590174263", "matched"),
    ]
    assert main(["inspect-email", str(eml), *pending]) == 0
    text = capsys.readouterr().out
    assert "Digest:     2 exports, each with its own link" in text
    assert "  job 590174263: matched, https://exports.mypinpointe.com/files/590174263/" in text


# ---- global options, before or after the subcommand --------------------------------------


def _leaf_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command a user can run, nested groups (``config show``) included."""
    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            found.append((prefix, parser))
            return
        for group in groups:
            for name, sub in group.choices.items():
                walk(f"{prefix} {name}".strip(), sub)

    walk("", build_parser())
    return found


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "C.toml", "-q", "--log-format", "json", "exports", "--json"],
        ["exports", "--json", "-c", "C.toml", "-q", "--log-format", "json"],
        ["-q", "exports", "-c", "C.toml", "--json", "--log-format=json"],
        ["config", "show", "--config", "C.toml", "--quiet", "--log-format", "json"],
    ],
)
def test_global_options_are_accepted_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.config, args.quiet, args.verbose, args.log_format) == (
        "C.toml",
        True,
        False,
        "json",
    )


def test_global_options_keep_their_defaults_when_not_given() -> None:
    args = build_parser().parse_args(["status"])
    assert (args.config, args.quiet, args.verbose, args.log_format) == (None, False, False, "text")
    # given on both sides: the one after the subcommand wins, as it was typed last
    args = build_parser().parse_args(["-c", "first.toml", "status", "-c", "last.toml"])
    assert args.config == "last.toml"


def test_verbose_and_quiet_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "status", "-q"]) == 2
    assert "-v and -q cannot be used together" in capsys.readouterr().err


def test_quiet_logs_warnings_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    config = tmp_path / "config.toml"
    config.write_text(MINIMAL + f'\n[state]\npath = "{tmp_path / "state.db"}"\n')
    main(["exports", "-c", str(config), "-q"])
    assert logging.getLogger().level == logging.WARNING
    main(["exports", "-c", str(config), "-v"])
    assert logging.getLogger().level == logging.DEBUG


@pytest.mark.parametrize("command", [name for name, _ in _leaf_parsers()])
def test_every_subcommands_help_has_a_description_an_example_and_the_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command.split(), "--help"]) == 0
    text = capsys.readouterr().out
    usage, _, rest = text.partition("\n\n")
    assert usage.startswith(f"usage: inbox-poller {command} ")
    description = rest.split("\n\n")[0]
    assert len(description.split()) >= 8, description  # a sentence, not the one-line summary
    examples = text.split("example:" if "example:" in text else "examples:")[1].split("\n\n")[0]
    assert re.search(rf"inbox-poller (.* )?{command}( |$)", examples, re.MULTILINE), examples
    codes = text.split("exit status:\n")[1]
    listed = [line.split()[0] for line in codes.splitlines() if line[:4].strip().isdigit()]
    assert "0" in listed and "2" in listed and "78" in listed
    for line in text.splitlines():
        assert len(line) <= 80, line


def test_the_help_test_sees_every_command() -> None:
    # a command added without add_command (no example, no exit codes) still gets walked
    names = [name for name, _ in _leaf_parsers()]
    assert {"run", "submit", "wait", "status", "exports", "check", "config show"} <= set(names)


# ---- submit's dates: real dates, ISO accepted, refused before anything is written --------


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--start", "20261332", "month must be in 1..12"),
        ("--start", "2026-02-30", "day is out of range for month"),
        ("--end", "20260229", "day is out of range for month"),  # 2026 is not a leap year
        ("--end", "2026-1-5", "not a date in YYYYMMDD or YYYY-MM-DD form"),
        ("--start", "２０２６１１０１", "not a date"),  # fullwidth digits match \d, not us
        ("--start", "2026-11-01T00:00", "not a date"),
    ],
)
def test_a_date_that_does_not_exist_is_a_usage_error_before_anything_is_written(
    tmp_path: Path, option: str, value: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(MINIMAL + f'\n[state]\npath = "{tmp_path / "state" / "state.db"}"\n')
    assert main(["-c", str(config), "submit", "--stat", "4711", option, value]) == 2
    err = capsys.readouterr().err
    assert why in err
    assert not (tmp_path / "state").exists()


def test_iso_dates_are_accepted_and_recorded_as_pinpointe_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("TOKEN_VAR", "token")
    # nothing listens on port 1: the POST is refused (definitively), the row stays
    config = tmp_path / "config.toml"
    config.write_text(
        MINIMAL.replace("[pinpointe]", '[pinpointe]\napi_url = "https://127.0.0.1:1/apijson.php"')
        + f'\n[state]\npath = "{tmp_path / "state.db"}"\n'
    )
    argv = ["submit", "--stat", "4711", "--start", "2024-02-29", "--end", "20240301"]
    assert main([*argv, "-c", str(config), "-q"]) == 1
    capsys.readouterr()
    assert main(["exports", "--json", "-c", str(config)]) == 0
    [export] = json.loads(capsys.readouterr().out)
    assert (export["startdate"], export["enddate"]) == ("20240229", "20240301")
    assert export["state"] == "submit_failed"


# ---- submit --method: an option or format the method does not take is a usage error ------


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--method", "GetSegmentSubscribersAsync", "--segment", "7", "--format", "xml"],
         "does not take format 'xml'"),
        (["--stat", "4711", "--format", "csv"], "does not take format 'csv'"),
        (["--method", "GetListSubscribersAsync", "--list", "3", "--format", "csv"],
         "allows json"),
        (["--method", "GetListSubscribersAsync", "--segment", "7", "--list", "3"],
         "takes no --segment"),
        (["--method", "GetTagSubscribersAsync"], "needs --tag"),
        (["--method", "GetNewsletterStatsAsync", "--list", "1", "--list", "2"], "one ID"),
        (["--method", "GetTagSubscribersAsync", "--tag", "9", "--status", "gone"],
         "expected one of any"),
        (["--method", "GetTagSubscribersAsync", "--tag", "9", "--start", "20260101"],
         "takes no dates"),
        (["--method", "GetNoSuchAsync", "--stat", "1"], "invalid choice"),
        (["--list", "3"], "takes no --list"),
    ],
)  # fmt: skip
def test_an_option_or_format_the_method_does_not_take_is_a_usage_error(
    tmp_path: Path, argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(MINIMAL + f'\n[state]\npath = "{tmp_path / "state" / "state.db"}"\n')
    assert main(["-c", str(config), "submit", *argv]) == 2
    err = capsys.readouterr().err
    assert why in err
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["status"], "status"),
        (["-c", "C.toml", "-q", "exports", "--json"], "exports"),
        (["--config", "status", "exports"], "exports"),  # a value that looks like a command
        (["--conf", "status", "exports"], "exports"),  # argparse's abbreviation of --config
        (["--config=C.toml", "--log-format", "json", "config", "show"], "config"),
        (["-v", "run", "--once"], "run"),
        (["statsu"], None),
        (["--help"], None),
        (["-c"], None),
        ([], None),
    ],
)
def test_the_command_to_run_is_found_before_parsing(argv: list[str], command: str | None) -> None:
    assert named_command(argv) == command


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "C.toml", "-q", "--log-format", "json", "exports", "--json"],
        ["-q", "exports", "-c", "C.toml", "--json", "--log-format=json"],
        ["config", "show", "--config", "C.toml"],
        ["submit", "--stat", "4711", "--start", "20260101", "--end", "20260102"],
        ["run", "--once"],
        ["archive", "verify"],
    ],
)
def test_the_one_command_parser_parses_as_the_whole_one(argv: list[str]) -> None:
    def parsed(parser: argparse.ArgumentParser) -> dict[str, object]:
        found = vars(parser.parse_args(argv))
        return {**found, "handler": found["handler"].__name__}  # a new closure per parser

    assert parsed(build_parser(named_command(argv))) == parsed(build_parser())


def test_an_unknown_command_is_refused_with_the_list_of_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["statsu"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'statsu'" in err
    assert "'status'" in err


def test_the_global_options_that_take_a_value_are_the_ones_named_command_skips() -> None:
    from inbox_poller.cli.program import _VALUED_OPTIONS

    valued = {
        option
        for action in build_parser("status")._actions
        if action.nargs is None and action.option_strings and action.dest != "help"
        for option in action.option_strings
        if option.startswith("--") and not isinstance(action, argparse._VersionAction)
    }
    assert valued == set(_VALUED_OPTIONS)
