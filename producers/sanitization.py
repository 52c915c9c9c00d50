"""Removal of secrets and personal data from free text before it leaves the process.

Each kind of secret has a pattern and, where one exists, cheap substrings without which
it cannot occur, so ordinary messages cost a few substring tests instead of a regex
scan per kind. Matches are replaced by a marker naming the kind (``[REDACTED:jwt]``)
so messages stay useful for debugging.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

_SECRET_KEYS = ("pass", "pwd", "pw", "secret", "token", "key", "auth", "session", "sig",
                "credential")
_DIGITS = str.maketrans("", "", "0123456789")


@dataclass(frozen=True)
class _Redactor:
    kind: str
    pattern: re.Pattern[str]
    needles: tuple[str, ...] = ()  # the secret cannot occur unless one is in the text
    min_digits: int = 0

    def applies(self, lowered: str, digits: int) -> bool:
        if digits < self.min_digits:
            return False
        if not self.needles:
            return True
        for needle in self.needles:  # noqa: SIM110 - a loop beats any() on this hot path
            if needle in lowered:
                return True
        return False


def _marker(kind: str) -> Callable[[re.Match[str]], str]:
    return lambda match: f"[REDACTED:{kind}]"


def _url_credentials(match: re.Match[str]) -> str:
    return f"{match.group('scheme')}[REDACTED]@"


def _base64_secret(match: re.Match[str]) -> str:
    """Long runs mixing letters and digits are secrets; long words are not."""
    run = match.group(0)
    if not any(c.isdigit() for c in run) or not any(c.isalpha() for c in run):
        return run
    return "[REDACTED:base64_secret]"


def _key_value(match: re.Match[str]) -> str:
    return f"{match.group('key')}{match.group('sep')}[REDACTED]"


# Every pattern runs in time linear in the text: a match can only start where a run of
# its characters starts (look-behinds), and repetitions that could re-scan a run are
# possessive or atomic. (An e-mail pattern without that took 533 ms on an 8 KiB message.)
# Key names: the long ones anywhere in a key (db_password, userPassword), the short ones
# only where a word starts (pass=, pw=, but not compass=).
_KEY_NAMES = (r"(?i:passw(?:or)?d|pwd|secret|token|api[_-]?key|apikey|auth(?:orization)?|"
              r"session[_-]?id|private[_-]?key|signature|credentials?)"
              r"|(?<![A-Za-z])(?i:pass|pw|sig)")
_REDACTORS: tuple[tuple[_Redactor, Callable[[re.Match[str]], str]], ...] = tuple(
    (redactor, replace) for redactor, replace in (
        (_Redactor("private_key", re.compile(
            r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----"
            r"|$)", re.DOTALL), ("private key-----",)), _marker("private_key")),
        (_Redactor("ssh_key", re.compile(
            r"(?<![A-Za-z0-9-])(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp\d+)\s++"
            r"AAAA[A-Za-z0-9+/]++=*+"), ("ssh-", "ecdsa-")), _marker("ssh_key")),
        (_Redactor("url_credentials", re.compile(
            r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*+://)"
            r"[^\s/:@]*+:[^\s/@]++@"), ("://",)), _url_credentials),
        (_Redactor("bearer", re.compile(r"(?i:bearer|basic)\s++[A-Za-z0-9._~+/=-]{8,}"),
                   ("bearer", "basic")), _marker("bearer")),
        (_Redactor("jwt", re.compile(
            r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"),
            ("eyj",)), _marker("jwt")),
        (_Redactor("aws_key", re.compile(r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}"),
                   ("akia", "asia", "agpa", "aida", "aroa")), _marker("aws_key")),
        (_Redactor("api_key", re.compile(
            r"(?<![A-Za-z0-9_-])(?:(?:sk|pk|rk)-(?:[A-Za-z0-9]++-)?[A-Za-z0-9_-]{16,}+|"
            r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}+|gh[pousr]_[A-Za-z0-9]{20,}+|"
            r"github_pat_[A-Za-z0-9_]{20,}+|xox[abposr]-[A-Za-z0-9-]{10,}+|"
            r"AIza[A-Za-z0-9_-]{30,}+)"),
            ("sk-", "pk-", "rk-", "sk_", "rk_", "gh", "xox", "aiza")), _marker("api_key")),
        (_Redactor("key_value", re.compile(
            # key, an optional closing quote, then = or : (also percent-encoded), then the
            # value: quoted, or up to a separator
            r"(?P<key>(?:" + _KEY_NAMES + r")[A-Za-z0-9_-]{0,20}+)"
            r"(?P<sep>(?:[\"']|%22|%27)?+\s*+(?:[=:]|%3[dDaA])(?!//)\s*+(?:%22|%27)?+)"
            r"(?:\"[^\"]*+\"|'[^']*+'|[^\s&,;?#\"'}]++)"), _SECRET_KEYS), _key_value),
        (_Redactor("email", re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@(?>[A-Za-z0-9-]++\.)++[A-Za-z]{2,}+"),
            ("@",)), _marker("email")),
        (_Redactor("card", re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"), min_digits=13),
         _marker("card")),
        (_Redactor("hex_secret", re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{32,}+"), min_digits=1),
         _marker("hex_secret")),
        (_Redactor("base64_secret", re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}+={0,2}"),
                   min_digits=1), _base64_secret),
    )
)


# Identifiers (endpoint, template id, request id) keep the redactors that recognise a
# secret by its shape or its key; the ones that go by length and entropy alone (hex,
# base64, card-like digit runs) would eat legitimate ids such as 32-hex trace ids.
_IDENTIFIER_REDACTORS = tuple((redactor, replace) for redactor, replace in _REDACTORS
                              if not redactor.min_digits)


def _redact(text: str, redactors: tuple[tuple[_Redactor, Callable[[re.Match[str]], str]], ...]
            ) -> str:
    lowered = text.lower()
    digits = len(text) - len(text.translate(_DIGITS))
    for redactor, replace in redactors:
        if redactor.applies(lowered, digits):
            text = redactor.pattern.sub(replace, text)
            lowered = text.lower()
    return text


@lru_cache(maxsize=4096)
def sanitize(text: str) -> str:
    """``text`` with tokens, keys, credentials, e-mail addresses and card numbers replaced.

    Pure and cached: repeated messages cost a dictionary lookup. Linear in ``text``.
    """
    return _redact(text, _REDACTORS)


# UUIDs, trace ids and other hex ids hold none of the identifier redactors' shapes (each
# needs a letter beyond a-f, an '@' or a '/'): the common case skips the scan, and unique
# ids do not churn the cache.
_HEX_ID = re.compile(r"[0-9A-Fa-f-]{1,128}")


def sanitize_identifier(text: str) -> str:
    """An identifier (endpoint, template or request id) with credentials, keys, tokens and
    e-mail addresses replaced; ids that merely look random are kept. Pure; a repeated
    identifier costs a dictionary lookup."""
    known = _identifiers.get(text)
    if known is not None:
        return known
    if _HEX_ID.fullmatch(text):
        return text
    sanitized = _redact(text, _IDENTIFIER_REDACTORS)
    if len(_identifiers) >= 4096:  # bounded: a churn of distinct ids starts it over
        _identifiers.clear()
    _identifiers[text] = sanitized
    return sanitized


# Identifiers seen (not hex ids) and their sanitized form: each step is atomic, so
# threads share it without a lock.
_identifiers: dict[str, str] = {}
