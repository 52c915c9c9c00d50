import pytest

from ept.classification import (
    classify_failure,
    clear_custom_failure_rules,
    register_failure_rule,
)


@pytest.mark.parametrize(("error", "reason"), [
    # The specification's table, example errors column.
    ("Memory limit exceeded", "memory_exceeded"),
    ("OOM", "memory_exceeded"),
    ("Timeout after 30s", "timeout"),
    ("Request timeout", "timeout"),
    ("Composition not found", "invalid_composition"),
    ("Invalid format", "invalid_composition"),
    ("File not found", "missing_asset"),
    ("Missing image", "missing_asset"),
    ("Codec error", "codec_error"),
    ("Encoding failed", "codec_error"),
    ("Something odd happened", "unknown"),
    # Case-insensitive.
    ("REQUEST TIMED OUT", "timeout"),
    ("out of memory while compositing", "memory_exceeded"),
    # Exception types.
    (TimeoutError("slow"), "timeout"),
    (MemoryError(), "memory_exceeded"),
    (FileNotFoundError("/assets/logo.png"), "missing_asset"),
    (RuntimeError("ffmpeg exited with 1"), "codec_error"),
    (ValueError("weird"), "unknown"),
    (None, "unknown"),
    ("", "unknown"),
])
def test_specification_table(error: object, reason: str) -> None:
    assert classify_failure(error) == reason  # type: ignore[arg-type]


def test_host_rules_come_first_and_are_validated() -> None:
    try:
        register_failure_rule("codec_error", r"gpu fault")
        assert classify_failure("GPU fault: timeout on device") == "codec_error"

        class QuotaExceeded(Exception):
            pass

        register_failure_rule("memory_exceeded", exception_types=(QuotaExceeded,))
        assert classify_failure(QuotaExceeded("quota")) == "memory_exceeded"
        with pytest.raises(ValueError, match="reason"):
            register_failure_rule("exploded", "boom")
        with pytest.raises(ValueError, match="pattern"):
            register_failure_rule("timeout")
    finally:
        clear_custom_failure_rules()
    assert classify_failure("GPU fault: timeout on device") == "timeout"
