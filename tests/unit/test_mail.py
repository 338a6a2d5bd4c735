"""piqc_slurm.mail against a real SMTP server (aiosmtpd) the test starts on 127.0.0.1."""

from __future__ import annotations

import os

import pytest
from smtpserver import free_port, serve

from piqc_slurm import mail
from piqc_slurm.config import Config, defaults
from piqc_slurm.errors import ConfigError

pytestmark = pytest.mark.unit

LOGINS = {b"piqc": b"s3cret pass"}


def authenticate(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult

    ok = LOGINS.get(getattr(auth_data, "login", None)) == getattr(auth_data, "password", object())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 on a failure


@pytest.fixture
def smtp():
    with serve(authenticator=authenticate, auth_require_tls=False) as server:
        yield server


def cfg_for(port: int, **mail_keys) -> Config:
    values = {**defaults(), "mail.host": "127.0.0.1", "mail.port": port, "mail.starttls": False,
              "mail.timeout": 5.0}
    values.update({f"mail.{k}": v for k, v in mail_keys.items()})
    return Config(values)


HTML = ("<!DOCTYPE html>\n<html><body><h1>GPU digest – café</h1>\n"
        "<p>" + "spend $1,234.56 " * 80 + "</p>\r\n"  # one line far over 998 characters, and a CRLF
        "<p>=3D not quoted-printable; a line that is only a dot follows</p>\n.\n</body></html>")  # no final newline
TEXT = "GPU digest – café\n\nspend $1,234.56\n"


def test_html_file_arrives_as_the_html_part_of_a_multipart_alternative(smtp, tmp_path):
    page = tmp_path / "digest.html"
    page.write_bytes(HTML.encode("utf-8"))
    html = page.read_bytes().decode("utf-8")
    msg = mail.compose("GPU digest 2026-11-30", html, TEXT, "piqc@example.org", ["ops@example.org", "b@x.org"])
    assert mail.send(msg, cfg_for(smtp.port)) == {}

    (env,) = smtp.envelopes
    assert env.mail_from == "piqc@example.org"
    assert env.rcpt_tos == ["ops@example.org", "b@x.org"]
    (got,) = smtp.messages()
    assert got.get_content_type() == "multipart/alternative"
    assert got["Subject"] == "GPU digest 2026-11-30"
    assert got["To"] == "ops@example.org, b@x.org"
    parts = list(got.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert parts[1].get_content() == page.read_bytes().decode("utf-8")
    assert parts[1].get_payload(decode=True) == page.read_bytes()
    assert parts[0].get_content() == TEXT


def test_starttls_against_a_server_without_it_is_a_one_line_error(smtp):
    msg = mail.compose("s", "<p>x</p>", "x", "piqc@example.org", ["ops@example.org"])
    with pytest.raises(mail.MailError) as exc:
        mail.send(msg, cfg_for(smtp.port, starttls=True))
    text = str(exc.value)
    assert f"127.0.0.1:{smtp.port}" in text and "STARTTLS" in text and "\n" not in text
    assert smtp.envelopes == []


def write_password(tmp_path, mode: int):
    path = tmp_path / "smtp-password"
    path.write_text("s3cret pass\n")
    os.chmod(path, mode)
    return str(path)


def test_a_password_file_readable_by_others_is_refused(smtp, tmp_path):
    path = write_password(tmp_path, 0o644)
    msg = mail.compose("s", "<p>x</p>", "x", "piqc@example.org", ["ops@example.org"])
    with pytest.raises(ConfigError) as exc:
        mail.send(msg, cfg_for(smtp.port, username="piqc", password_file=path))
    text = str(exc.value)
    assert "0644" in text and path in text and "\n" not in text and "s3cret" not in text
    assert smtp.envelopes == []
    os.chmod(path, 0o640)  # group-readable: refused too
    with pytest.raises(ConfigError, match="0640"):
        mail.check(cfg_for(smtp.port, username="piqc", password_file=path))


def test_a_symlinked_password_file_is_refused(smtp, tmp_path):
    real = write_password(tmp_path, 0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symlink"):
        mail.read_password(str(link))


def test_login_with_a_0600_password_file(smtp, tmp_path):
    path = write_password(tmp_path, 0o600)
    msg = mail.compose("s", "<p>x</p>", "x", "piqc@example.org", ["ops@example.org"])
    assert mail.send(msg, cfg_for(smtp.port, username="piqc", password_file=path)) == {}
    assert len(smtp.envelopes) == 1


def test_a_refused_login_is_one_line_without_the_password(smtp, tmp_path):
    path = tmp_path / "pw"
    path.write_text("wrong-password\n")
    os.chmod(path, 0o600)
    msg = mail.compose("s", "<p>x</p>", "x", "piqc@example.org", ["ops@example.org"])
    with pytest.raises(mail.MailError) as exc:
        mail.send(msg, cfg_for(smtp.port, username="piqc", password_file=str(path)))
    text = str(exc.value)
    assert f"127.0.0.1:{smtp.port}" in text and "login" in text and "wrong-password" not in text
    assert "\n" not in text and smtp.envelopes == []


def test_no_server_is_one_line_naming_host_and_port():
    port = free_port()  # nothing listens there now
    msg = mail.compose("s", "<p>x</p>", "x", "piqc@example.org", ["ops@example.org"])
    with pytest.raises(mail.MailError) as exc:
        mail.send(msg, cfg_for(port))
    assert f"127.0.0.1:{port}" in str(exc.value) and "\n" not in str(exc.value)


def test_nothing_is_sent_without_a_host():
    msg = mail.compose("s", "<p>x</p>", "x", "piqc@example.org", ["ops@example.org"])
    with pytest.raises(ConfigError, match=r"\[mail\] host"):
        mail.send(msg, Config(defaults()))


def test_a_header_with_a_line_break_is_refused():
    with pytest.raises(mail.MailError, match="line break"):
        mail.compose("s\r\nBcc: x@y.org", "<p>x</p>", "x", "piqc@example.org", ["ops@example.org"])
    with pytest.raises(mail.MailError, match="line break"):
        mail.compose("s", "<p>x</p>", "x", "piqc@example.org", ["ops@example.org\nBcc: x@y.org"])


def test_sender_address_order():
    cfg = Config({**defaults(), "mail.from": "gpu@example.org"})
    assert mail.sender_address(cfg, "notes@example.org") == "notes@example.org"
    assert mail.sender_address(cfg) == "gpu@example.org"
    assert mail.sender_address(Config(defaults())).startswith("piqc-slurm@")
