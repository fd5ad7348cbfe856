"""The configuration file: valid files, and errors that name their place."""

from __future__ import annotations

from pathlib import Path

import pytest

from ktrail.cli.main import main
from ktrail.config import ConfigError, load, parse
from ktrail.loader.ignore import Ignore

GOOD = """\
profile: full
events:
  enable: [kill]
  disable: [utimes, truncate]
watch: [/srv/secrets]
ignore:
  pids: [1234]
  uids: [998]
  comms: [chronyd]
  paths: [/var/lib/prometheus/]
"""


def test_valid_file() -> None:
    c = parse(GOOD, "k.yaml")
    assert c.profile == "full" and c.watch == ("/srv/secrets",)
    assert "kill" in c.events() and "utimes" not in c.events() and "truncate" not in c.events()
    assert c.ignore == Ignore(frozenset({1234}), frozenset({998}), frozenset({"chronyd"}),
                              ("/var/lib/prometheus",))


def test_store_section() -> None:
    c = parse("store:\n  path: /srv/trail.db\n  retain: 30d\n  max_size: 20G\n"
              "  enabled: false\n", "k.yaml")
    assert (c.store.path, c.store.retain, c.store.max_size, c.store.enabled) == (
        "/srv/trail.db", "30d", "20G", False)
    assert parse("", "k.yaml").store.enabled


def test_empty_file_is_defaults() -> None:
    assert parse("", "k.yaml").profile == "default"


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("profile: loud\n", "k.yaml:1:10", "profile must be one of"),
        ("profil: default\n", "k.yaml:1:1", "unknown key 'profil'"),
        ("events:\n  enable: [nope]\n", "k.yaml:2:12", "unknown event type 'nope'"),
        ("ignore:\n  pids: [12, x]\n", "k.yaml:2:14", "'x' is not a number"),
        ("ignore:\n  uids: [-1]\n", "k.yaml:2:10", "out of range"),
        ("ignore:\n  comms: [a-very-long-process-name]\n", "k.yaml:2:11", "15-byte"),
        ("ignore:\n  paths: [relative/dir]\n", "k.yaml:2:11", "must be absolute"),
        ("watch: /one\n", "k.yaml:1:8", "must be a list"),
        ("events: [exec]\n", "k.yaml:1:9", "must be a mapping"),
        ("profile: [unclosed\n", "k.yaml:2:1", "not valid YAML"),
        ("store:\n  retain: forever\n", "k.yaml:2:11", "store.retain: 'forever' is not a"),
        ("store:\n  max_size: lots\n", "k.yaml:2:13", "store.max_size: 'lots' is not a size"),
        ("store:\n  enabled: perhaps\n", "k.yaml:2:12", "true or false"),
        ("store:\n  paht: /x\n", "k.yaml:2:3", "unknown key 'paht' in store"),
    ],
)
def test_errors_name_file_line_column(text: str, where: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, "k.yaml")
    assert str(e.value).startswith(where + ": ")
    assert words in str(e.value)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(ConfigError, match="not a text file"):
        load(str(bad))


def test_cli_reports_config_errors_without_traceback(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "ktrail.yaml"
    cfg.write_text("events:\n  disable: [utimez]\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ktrail: error: {cfg}:2:13: events.disable: unknown event type")
    assert "Traceback" not in err
