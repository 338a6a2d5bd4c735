"""Mail: compose a text + HTML message and send it through the [mail] SMTP server.

Used by the digest (`--mail-to`) and `piqc-slurm notify-users --send`.

- compose(): multipart/alternative, the text/plain part first, then text/html,
  both UTF-8 and base64-encoded from the exact bytes given, so a reader's
  decoded HTML part is the HTML string byte for byte (quoted-printable and
  7bit parts get their line ends rewritten on the way).
- send(): smtplib with [mail] host, port, starttls, username, password_file,
  timeout. The password is read from its file at send time, and only from a
  file no one but its owner (root or the user running piqc-slurm) can read;
  it is never printed. Every failure is one line naming host:port.
"""

from __future__ import annotations

import os
import stat
from email.message import EmailMessage

from piqc_slurm.errors import ConfigError, MailError, first_line

__all__ = ["MailError", "check", "compose", "send", "sender_address"]


def _header(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise MailError(f"mail {name} header holds a line break: {value!r}")
    return value


def compose(subject: str, html: str, text: str, sender: str, to: list[str]) -> EmailMessage:
    """A multipart/alternative message: text/plain, then text/html (UTF-8, base64)."""
    from email.utils import formatdate, make_msgid

    if not to:
        raise MailError("mail: no recipient")
    msg = EmailMessage()
    msg["Subject"] = _header("Subject", subject)
    msg["From"] = _header("From", sender)
    msg["To"] = ", ".join(_header("To", addr) for addr in to)
    msg["Date"] = formatdate(localtime=True)
    domain = sender.rpartition("@")[2].strip(">").strip() or None
    msg["Message-ID"] = make_msgid(domain=domain)
    # bytes content: base64 of exactly these bytes (no line-end rewriting, no added newline)
    msg.set_content(text.encode("utf-8"), maintype="text", subtype="plain", cte="base64",
                    params={"charset": "utf-8"})
    msg.add_alternative(html.encode("utf-8"), maintype="text", subtype="html", cte="base64",
                        params={"charset": "utf-8"})
    return msg


def sender_address(cfg, override: str = "") -> str:
    """`override` (a table's own from), else [mail] from, else piqc-slurm@<this host's FQDN>."""
    if override:
        return override
    if cfg["mail.from"]:
        return cfg["mail.from"]
    import socket

    return f"piqc-slurm@{socket.getfqdn()}"


def server(cfg) -> tuple[str, int]:
    """[mail] host and port; ConfigError when no host is configured (nothing is ever sent then)."""
    host = cfg["mail.host"]
    if not host:
        raise ConfigError("no mail server configured: set [mail] host (and port, starttls, username, "
                          "password_file) in the config; see docs/configuration.md")
    return host, int(cfg["mail.port"])


def read_password(path: str) -> str:
    """The first line of `path`. ConfigError if the file is a symlink, not a regular file, readable or
    writable by group or others, or owned by anyone but root or the current user."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"mail.password_file {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"mail.password_file {path}: cannot open it ({exc.strerror}; a symlink is "
                          "refused)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"mail.password_file {path}: not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(f"mail.password_file {path}: mode {stat.S_IMODE(st.st_mode):04o} lets group or "
                              f"others read it: chmod 600 {path}")
        if st.st_uid not in (0, os.geteuid()):
            raise ConfigError(f"mail.password_file {path}: owned by uid {st.st_uid}, not by root or the "
                              f"user running piqc-slurm (uid {os.geteuid()})")
        data = b""
        while len(data) < 65536:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    try:
        password = data.decode("utf-8").splitlines()[0] if data else ""
    except UnicodeDecodeError:
        raise ConfigError(f"mail.password_file {path}: not UTF-8 text") from None
    if not password:
        raise ConfigError(f"mail.password_file {path}: empty")
    return password


def check(cfg) -> None:
    """Everything send() needs that can be known without connecting: a host, and with a
    username a readable password file. Call it before a batch of mails so none is half done."""
    server(cfg)
    if cfg["mail.username"]:
        if not cfg["mail.password_file"]:
            raise ConfigError("mail.username is set but mail.password_file is not")
        read_password(cfg["mail.password_file"])


def send(msg: EmailMessage, cfg) -> dict:
    """Send `msg` through [mail]'s server. Returns the refused recipients (send_message's dict:
    empty when all took it); MailError (one line, naming host:port) when none did or it failed."""
    import smtplib
    import ssl

    host, port = server(cfg)
    where = f"{host}:{port}"
    username = cfg["mail.username"]
    password = None
    if username:
        if not cfg["mail.password_file"]:
            raise ConfigError("mail.username is set but mail.password_file is not")
        password = read_password(cfg["mail.password_file"])
    try:
        with smtplib.SMTP(host, port, timeout=float(cfg["mail.timeout"])) as smtp:
            smtp.ehlo()
            if cfg["mail.starttls"]:
                if not smtp.has_extn("starttls"):
                    raise MailError(f"mail server {where} does not offer STARTTLS (mail.starttls = true): "
                                    "nothing sent")
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if username:
                smtp.login(username, password)
            return smtp.send_message(msg)
    except MailError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"mail server {where} refused the login of {username} ({exc.smtp_code})") from None
    except smtplib.SMTPRecipientsRefused as exc:
        who = ", ".join(f"{addr} ({code})" for addr, (code, _) in exc.recipients.items())
        raise MailError(f"mail server {where} refused every recipient: {who}") from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        line = (str(text).strip().splitlines() or [""])[0]
        raise MailError(f"mail server {where} refused the message: {exc.smtp_code} {line}") from None
    except ssl.SSLError as exc:
        raise MailError(f"mail server {where}: TLS failed: {first_line(exc)}") from None
    except (smtplib.SMTPException, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        raise MailError(f"cannot send mail via {where}: {reason}") from None
