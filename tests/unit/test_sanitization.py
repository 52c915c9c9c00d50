"""Sanitization as a property: a secret of each kind, anywhere in random text, never survives."""

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from ept.sanitization import sanitize

ALNUM = string.ascii_letters + string.digits
text = st.text(alphabet=string.ascii_letters + string.digits + " .,:;!?-_/()[]'\"\n", max_size=60)


def token(alphabet: str, size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=size, max_size=size)


SECRETS: dict[str, st.SearchStrategy[str]] = {
    "bearer": token(ALNUM, 24).map(lambda t: f"Bearer {t}"),
    "jwt": st.tuples(token(ALNUM, 12), token(ALNUM, 20), token(ALNUM, 16)).map(
        lambda p: f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}"),
    "aws": token(string.ascii_uppercase + string.digits, 16).map(lambda t: f"AKIA{t}"),
    "openai": token(ALNUM, 32).map(lambda t: f"sk-{t}"),
    "github": token(ALNUM, 36).map(lambda t: f"ghp_{t}"),
    "hex": token("0123456789abcdef", 40),
    "base64": token(ALNUM + "+/", 48).filter(lambda t: any(c.isdigit() for c in t)),
    "password": token(ALNUM + "!$%", 12).map(lambda t: f"password={t}"),
    "query_token": token(ALNUM, 20).map(lambda t: f"?access_token={t}&x=1"),
    "url_credentials": st.tuples(token(string.ascii_lowercase, 6), token(ALNUM, 12)).map(
        lambda p: f"https://{p[0]}:{p[1]}@api.example.com/v1"),
    "email": st.tuples(token(string.ascii_lowercase, 8), token(string.ascii_lowercase, 6)).map(
        lambda p: f"{p[0]}@{p[1]}.com"),
    "card": st.sampled_from(["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009"]),
}


def sensitive_part(kind: str, secret: str) -> str:
    """The part of the secret that must not survive (the key name itself may)."""
    if kind == "password":
        return secret.split("=", 1)[1]
    if kind == "query_token":
        return secret.split("=", 1)[1].split("&")[0]
    if kind == "url_credentials":
        return secret.split("//", 1)[1].split("@")[0].split(":")[1]
    if kind == "bearer":
        return secret.split(" ", 1)[1]
    return secret


def make_test(kind: str):  # type: ignore[no-untyped-def]
    @settings(max_examples=300)
    @given(before=text, secret=SECRETS[kind], after=text, separator=st.sampled_from(" \n,;:("))
    def check(before: str, secret: str, after: str, separator: str) -> None:
        message = f"{before}{separator}{secret}{separator}{after}"
        cleaned = sanitize(message)
        part = sensitive_part(kind, secret)
        # The random text around it may itself contain the same characters by chance.
        assert cleaned.count(part) <= before.count(part) + after.count(part), (kind, cleaned)

    return check


for _kind in SECRETS:
    globals()[f"test_{_kind}_never_survives"] = make_test(_kind)


@settings(max_examples=300)
@given(st.text(alphabet=string.ascii_letters + " ", max_size=80))
def test_plain_text_is_unchanged(message: str) -> None:
    assert sanitize(message) == message


def test_examples_keep_their_meaning() -> None:
    assert sanitize("Render operation timed out after 30 seconds") == (
        "Render operation timed out after 30 seconds")
    assert sanitize("upload failed: token=abc123 for jane@example.com") == (
        "upload failed: token=[REDACTED] for [REDACTED:email]")
