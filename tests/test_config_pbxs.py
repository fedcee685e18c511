"""Several PBXs in the config: `[[pbx]]` tables (or `[ami]`, the PBX "default"); each mistake
is named with its file, key and fix; the directory matches a sender within its own PBX."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.core.directory import DEFAULT_PBX
from bridge.core.errors import ConfigError, ConfigProblem
from bridge.core.policy import resolve
from bridge.settings.config import load_settings

ENV = {"SLACK_BOT_TOKEN": "xoxb-1-secret", "SLACK_SIGNING_SECRET": "sign-secret",
       "AMI_SECRET_HQ": "hq-secret", "BRANCH_PASSWORD": "branch-secret"}

SLACK = """
[slack]
command = "/sip"
default_channel = "C0123456789"
"""

HQ = """
[[pbx]]
name = "hq"
host = "pbx-hq.example.com"
username = "slackbridge"
from = "sip:slack@pbx-hq.example.com"
"""

BRANCH = """
[[pbx]]
name = "branch"
host = "10.1.0.5"
port = 5039
tls = true
tls_verify = false
username = "bridge-branch"
secret_env = "BRANCH_PASSWORD"
required = false
"""

ENDPOINTS = """
[[endpoints]]
name = "alice-hq"
pbx = "hq"
destination = "pjsip:alice"
channel = "C0123456780"

[[endpoints]]
name = "alice-branch"
pbx = "branch"
destination = "pjsip:alice"
channel = "C0123456781"
"""

GOOD = HQ + BRANCH + SLACK + ENDPOINTS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None
             ) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), ENV if env is None else env)
    return info.value.problems


def only(found: list[ConfigProblem], key: str) -> ConfigProblem:
    [problem] = [p for p in found if p.key == key]
    assert problem.fix, problem
    return problem


def test_two_pbxs_load_each_with_its_own_link_settings_and_secret(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), ENV)
    hq, branch = settings.all_pbxs
    assert (hq.name, hq.host, hq.port, hq.username, hq.required) == (
        "hq", "pbx-hq.example.com", 5038, "slackbridge", True)
    assert (branch.name, branch.host, branch.port, branch.tls, branch.required) == (
        "branch", "10.1.0.5", 5039, True, False)
    assert hq.secret.reveal() == "hq-secret" and branch.secret.reveal() == "branch-secret"
    assert hq.event_token != branch.event_token  # each derived from its own secret
    assert hq.from_ == "sip:slack@pbx-hq.example.com" and branch.from_ is None
    assert settings.several_pbxs and settings.ami is hq
    assert {"hq-secret", "branch-secret", hq.event_token.reveal(),
            branch.event_token.reveal()} <= set(settings.secrets())
    alice_hq = settings.directory.lookup("alice-hq")
    alice_branch = settings.directory.lookup("alice-branch")
    assert alice_hq is not None and alice_hq.pbx == "hq"
    assert alice_branch is not None and alice_branch.pbx == "branch"


def test_the_same_endpoint_on_two_pbxs_is_two_phones(tmp_path: Path) -> None:
    directory = load_settings(write(tmp_path, GOOD), ENV).directory
    hq = directory.by_asterisk_endpoint("alice", "hq")
    branch = directory.by_asterisk_endpoint("alice", "branch")
    assert hq is not None and hq.name == "alice-hq"
    assert branch is not None and branch.name == "alice-branch"
    assert directory.by_asterisk_endpoint("alice", "elsewhere") is None
    assert directory.by_asterisk_endpoint("alice") is None  # no PBX "default" here


def test_ami_alone_is_the_pbx_default_and_one_pbx_needs_no_endpoint_pbx(
        tmp_path: Path) -> None:
    single = """
[ami]
username = "slackbridge"
""" + SLACK + """
[[endpoints]]
name = "alice"
destination = "pjsip:alice"
channel = "C0123456780"
"""
    settings = load_settings(write(tmp_path, single), {**ENV, "AMI_SECRET": "s"})
    assert [p.name for p in settings.all_pbxs] == [DEFAULT_PBX]
    assert settings.directory.lookup("alice").pbx == DEFAULT_PBX  # type: ignore[union-attr]
    assert not settings.several_pbxs

    one_named = HQ + SLACK + """
[[endpoints]]
name = "alice"
destination = "pjsip:alice"
channel = "C0123456780"
"""
    settings = load_settings(write(tmp_path, one_named), ENV)
    assert [p.name for p in settings.all_pbxs] == ["hq"]
    assert settings.directory.lookup("alice").pbx == "hq"  # type: ignore[union-attr]


def test_ami_and_pbx_together_is_refused_with_the_fix(tmp_path: Path) -> None:
    found = problems(tmp_path, '[ami]\nusername = "x"\n' + GOOD,
                     {**ENV, "AMI_SECRET": "s"})
    problem = only(found, "ami")
    assert "together with [[pbx]]" in problem.problem and "[[pbx]]" in problem.fix
    assert problem.source.endswith("bridge.toml")


def test_an_endpoint_naming_an_unknown_pbx_is_refused_with_the_known_ones(
        tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD.replace('pbx = "branch"', 'pbx = "brnach"'))
    problem = only(found, "endpoints[1].pbx")
    assert "'brnach' is not a PBX" in problem.problem
    assert "hq, branch" in problem.fix


def test_two_pbxs_with_the_same_name_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, HQ + HQ.replace("pbx-hq", "pbx-hq2") + SLACK + ENDPOINTS
                     .replace('pbx = "branch"', 'pbx = "hq"'))
    problem = only(found, "pbx[1].name")
    assert "already the name of pbx[0]" in problem.problem and "its own name" in problem.fix


def test_with_several_pbxs_every_endpoint_and_number_pattern_names_its_pbx(
        tmp_path: Path) -> None:
    text = GOOD.replace('pbx = "branch"\n', "") + """
[[numbers]]
match = "^\\\\+1\\\\d{10}$"
destination = "pjsip:PJSIP/{number}@trunk"
channel = "C0123456782"
"""
    found = problems(tmp_path, text)
    assert "is missing, and there are several PBXs" in only(found, "endpoints[1].pbx").problem
    assert "hq, branch" in only(found, "numbers[0].pbx").fix


def test_a_number_pattern_goes_out_through_its_pbx(tmp_path: Path) -> None:
    text = GOOD + """
[[numbers]]
match = "^\\\\+1\\\\d{10}$"
destination = "pjsip:PJSIP/{number}@trunk"
channel = "C0123456782"
pbx = "branch"
"""
    settings = load_settings(write(tmp_path, text), ENV)
    found = resolve("+15551234567", settings.directory, settings.access)
    assert found is not None and found[0].pbx == "branch"


def test_each_pbx_secret_missing_names_its_own_variable(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD, {k: v for k, v in ENV.items()
                                      if k not in ("AMI_SECRET_HQ", "BRANCH_PASSWORD")})
    assert "export AMI_SECRET_HQ=" in only(found, "AMI_SECRET_HQ").fix
    assert "export BRANCH_PASSWORD=" in only(found, "BRANCH_PASSWORD").fix


def test_bad_pbx_names_and_keys_are_named(tmp_path: Path) -> None:
    text = GOOD.replace('name = "hq"', 'name = "Head Office"').replace(
        'required = false', 'required = false\nhots = "x"')
    found = problems(tmp_path, text)
    assert "cannot name a PBX" in only(found, "pbx[0].name").problem
    assert any(p.key == "pbx[1].hots" for p in found)
    # a mistake inside a [[pbx]] is named under its own key
    found = problems(tmp_path, GOOD.replace("port = 5039", "port = 99999"))
    assert only(found, "pbx[1].port")


def test_asterisk_config_prints_one_pbxs_snippets(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge", "asterisk-config", "--config",
                               str(path), *args], check=False, capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1], timeout=60,
                              env={"PATH": "/usr/bin:/bin"})

    branch = run("--pbx", "branch")
    assert branch.returncode == 0, branch.stderr
    assert "[bridge-branch]" in branch.stdout  # branch's AMI user, in manager.conf
    assert "[slackbridge]" not in branch.stdout
    assert "alice-branch" in branch.stdout and "alice-hq" not in branch.stdout
    hq = run("--pbx", "hq")
    assert hq.returncode == 0 and "[slackbridge]" in hq.stdout and "alice-hq" in hq.stdout
    neither = run()
    assert neither.returncode == 2 and "--pbx" in neither.stderr
    unknown = run("--pbx", "nowhere")
    assert unknown.returncode == 2 and "hq, branch" in unknown.stderr
