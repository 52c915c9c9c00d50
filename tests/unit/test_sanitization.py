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
    "redis_password": token(ALNUM, 14).map(lambda t: f"redis://:{t}@cache:6379/0"),
    "stripe": token(ALNUM, 24).map(lambda t: f"sk_live_{t}"),
    "quoted_key": token(ALNUM, 12).map(lambda t: f"{{'password': '{t}'}}"),
    "short_key": st.tuples(st.sampled_from(["pass", "pw", "PW", "Pass"]), token(ALNUM, 10)).map(
        lambda p: f"{p[0]}={p[1]}"),
    "private_key": token(ALNUM + "+/", 64).map(
        lambda t: f"-----BEGIN RSA PRIVATE KEY-----\n{t}\n-----END RSA PRIVATE KEY-----"),
    "ssh_key": token(ALNUM + "+/", 60).map(lambda t: f"ssh-ed25519 AAAAC3Nz{t}"),
    "percent_encoded": token(ALNUM, 14).map(lambda t: f"password%3D{t}"),
}


def sensitive_part(kind: str, secret: str) -> str:
    """The part of the secret that must not survive (the key name itself may)."""
    if kind in ("password", "short_key"):
        return secret.split("=", 1)[1]
    if kind == "redis_password":
        return secret.split(":")[2].split("@")[0]
    if kind == "quoted_key":
        return secret.split("'")[3]
    if kind == "private_key":
        return secret.split("\n")[1]
    if kind in ("ssh_key", "percent_encoded"):
        return secret[-14:]
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

    assert sanitize("compass: north, design: fine") == "compass: north, design: fine"


# Inputs built to make a backtracking pattern re-scan: long runs of the characters a
# pattern accepts, its anchors repeated, near-misses of its shape.
ADVERSARIAL = ["a" * 65_535 + "@", "a." * 32_767 + "@x", "a@" + "b." * 32_767,
               "a@" * 32_768, "a." * 32_768 + "@", "@a." * 21_845,
               "x://" + "a" * 65_532, "a" * 65_533 + "://", "eyJ" * 21_845,
               "sk-" * 21_845, "0" * 65_536, "1 " * 32_768, "password=" * 7_281,
               "bearer " * 9_362, "ssh-rsa " * 8_192, "-----BEGIN PRIVATE KEY-----" * 2_427]


@settings(max_examples=40, deadline=None)
@given(pattern=st.sampled_from(ADVERSARIAL), cut=st.integers(0, 4096),
       tail=st.text(alphabet="a@.:/-=0 ", max_size=8))
def test_every_pattern_is_linear_on_adversarial_input(pattern: str, cut: int,
                                                      tail: str) -> None:
    """64 KiB takes milliseconds, not the minutes a quadratic pattern would (the old
    e-mail pattern took 0.5 s on 8 KiB, so about 35 s here). A generous bound, not a
    benchmark: `make bench-sdk` prints the worst case."""
    import time

    message = pattern[cut:] + tail
    sanitize.cache_clear()
    began = time.perf_counter()
    sanitize(message)
    assert time.perf_counter() - began < 2.0, (pattern[:20], len(message))
