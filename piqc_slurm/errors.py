"""Typed errors. Each carries a one-line message meant for a person; the CLI
maps them to `piqc-slurm: message` and an exit code in one place."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a DB driver's own error when
    SQLAlchemy wraps one): one-line errors for a person, never a traceback."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact_url(url: str) -> str:
    """A store URL fit for a message: the password replaced by ***."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        cred, _, rest = tail.rpartition("@")
        return f"{head}://{cred.split(':', 1)[0]}:***@{rest}"
    return url


class PiqcError(Exception):
    """Base of every error piqc-slurm reports to a person."""

    exit_code = 1


class ConfigError(PiqcError):
    """The configuration file is unreadable, malformed, or has a bad key/value."""

    exit_code = 2


class UsageError(PiqcError):
    exit_code = 2


class StoreError(PiqcError):
    """The store (SQLite/PostgreSQL) is unreachable or refused an operation."""

    exit_code = 3


class SacctError(PiqcError):
    """sacct could not be run, or its output could not be parsed."""

    exit_code = 4


class ParseError(PiqcError, ValueError):
    """A value or a line did not parse. Keeps the faulty fragment and where it was."""

    exit_code = 4

    def __init__(self, message: str, *, source: str = "", line: int | None = None,
                 field: str | None = None, value: object = None):
        self.message = message
        self.source, self.line, self.field, self.value = source, line, field, value
        where = ":".join(str(p) for p in (source, line) if p not in ("", None))
        prefix = f"{where}: " if where else ""
        fld = f"field {field}: " if field else ""
        super().__init__(f"{prefix}{fld}{message}")

    def shifted(self, lines: int) -> "ParseError":
        """The same error with its line number moved by `lines` (a piece of a bigger input)."""
        if not lines or self.line is None:
            return self
        return type(self)(self.message, source=self.source, line=self.line + lines, field=self.field,
                          value=self.value)


class SpoolFormatError(PiqcError):
    """A spooled summary is malformed or of an unknown format version."""

    exit_code = 5


class MailError(PiqcError):
    """The SMTP server could not be reached, or refused the message."""

    exit_code = 6
