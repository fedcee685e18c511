"""Config for access control: the [ami] TLS keys, a CA file that must be usable, the AMI
secret never echoed in a problem, and the warning about a readable file holding it."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import pytest
from asterisk.harness import make_test_pki

from bridge.asterisk.ami import tls_context
from bridge.core.errors import ConfigError
from bridge.settings.config import load_settings

ENV = {"SLACK_BOT_TOKEN": "xoxb-1-secret", "SLACK_SIGNING_SECRET": "sign-secret",
       "AMI_SECRET": "ami-secret"}
REST = """
[slack]
default_channel = "C0123456789"

[[endpoints]]
name = "alice"
destination = "pjsip:alice"
channel = "C0123456780"
"""


def load(tmp_path: Path, ami: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "bridge.toml"
    path.write_text(f'[ami]\nusername = "slackbridge"\n{ami}\n{REST}')
    os.chmod(path, 0o600)
    return load_settings(path, ENV if env is None else env)


def problems(tmp_path: Path, ami: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, ami, env)
    return str(info.value)


def test_tls_is_off_by_default_and_port_5038(tmp_path: Path) -> None:
    ami = load(tmp_path, "").ami
    assert (ami.tls, ami.port, ami.ca_file, ami.tls_verify) == (False, 5038, None, True)
    assert tls_context(ami) is None


def test_tls_defaults_to_port_5039_and_verifies_against_the_system_cas(tmp_path: Path) -> None:
    ami = load(tmp_path, "tls = true").ami
    assert (ami.tls, ami.port) == (True, 5039)
    context = tls_context(ami)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert load(tmp_path, "tls = true\nport = 6000").ami.port == 6000


def test_ca_file_is_the_only_trusted_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(make_test_pki().ca_pem)
    ami = load(tmp_path, f'tls = true\nca_file = "{ca}"\ntls_server_name = "pbx.example"').ami
    assert ami.ca_file == ca and ami.tls_server_name == "pbx.example"
    context = tls_context(ami)
    assert context is not None and len(context.get_ca_certs()) == 1


def test_tls_verify_false_turns_off_every_check(tmp_path: Path) -> None:
    context = tls_context(load(tmp_path, "tls = true\ntls_verify = false").ami)
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_bad_tls_keys_are_each_reported_with_a_fix(tmp_path: Path) -> None:
    text = problems(tmp_path, f'tls = "yes"\ntls_verify = 1\nca_file = "{tmp_path}/none.pem"')
    assert 'ami.tls: must be true or false, got \'yes\'' in text
    assert "ami.tls_verify: must be true or false" in text
    assert f"ami.ca_file: {tmp_path}/none.pem does not exist" in text
    assert text.count("fix:") == 3


def test_ca_file_that_is_not_a_certificate_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    text = problems(tmp_path, f'tls = true\nca_file = "{junk}"')
    assert "ami.ca_file" in text and "holds no usable PEM certificate" in text


def test_unreadable_ca_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(make_test_pki().ca_pem)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # root reads anything; pretend not
    text = problems(tmp_path, f'tls = true\nca_file = "{ca}"')
    assert "cannot be read by this user" in text and "chmod 644" in text


def test_tls_keys_without_tls_are_a_mistake(tmp_path: Path) -> None:
    text = problems(tmp_path, 'tls_server_name = "pbx"')
    assert "ami.tls_server_name: has no effect: AMI over TLS is off" in text


@pytest.mark.parametrize("value", ['" hunter2-secret "', "12345678", '"hunter2\\tsecret"'])
def test_a_bad_secret_in_the_file_is_never_echoed(tmp_path: Path, value: str) -> None:
    env = {k: v for k, v in ENV.items() if k != "AMI_SECRET"}
    text = problems(tmp_path, f"secret = {value}", env)
    assert "ami.secret" in text
    assert "hunter2" not in text and "12345678" not in text


def test_readable_file_holding_the_secret_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {k: v for k, v in ENV.items() if k != "AMI_SECRET"}
    caplog.set_level(logging.WARNING, logger="bridge.settings.config")
    load(tmp_path, 'secret = "file-secret-123"', env)
    assert caplog.records == []  # 0600
    path = tmp_path / "bridge.toml"
    os.chmod(path, 0o644)
    load_settings(path, env)
    [record] = caplog.records
    message = record.getMessage()
    assert str(path) in message and f"chmod 600 {path}" in message and "mode 644" in message
    assert "file-secret-123" not in message


def test_readable_file_without_a_secret_is_fine(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.settings.config")
    path = tmp_path / "bridge.toml"
    load(tmp_path, "")
    os.chmod(path, 0o644)
    load_settings(path, ENV)
    assert caplog.records == []
