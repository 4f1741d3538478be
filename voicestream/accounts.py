"""The one definition of a valid account code, and its one error message."""
from __future__ import annotations

import re
from typing import TypeGuard

MAX_ACCOUNT_LENGTH = 64
ACCOUNT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_valid_account(code: object, max_length: int = MAX_ACCOUNT_LENGTH) -> TypeGuard[str]:
    return isinstance(code, str) and len(code) <= max_length and ACCOUNT_PATTERN.fullmatch(code) is not None


def invalid_account_message(code: object, max_length: int = MAX_ACCOUNT_LENGTH) -> str:
    """What a client is told about an account code that is_valid_account refused."""
    shown = code[:40] if isinstance(code, str) else type(code).__name__
    return f"invalid ACCOUNTCODE {shown!r}: use 1-{max_length} characters of A-Z a-z 0-9 _ -"
