"""The one definition of a valid account code, shared by balancer and worker."""
import re

ACCOUNT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_valid_account(code: object, max_length: int = 64) -> bool:
    return (isinstance(code, str) and len(code) <= max_length
            and ACCOUNT_PATTERN.fullmatch(code) is not None)
