"""--find-max: the largest number of streams that holds."""
from __future__ import annotations

from collections.abc import Callable


def next_n(n: int, factor: float, add: int) -> int:
    """The next level: n + add when add is set, else n * factor (at least n + 1)."""
    if add > 0:
        return n + add
    return max(n + 1, round(n * factor))


def find_max(run: Callable[[int], dict], start: int, factor: float, add: int, max_n: int,
             refine: int) -> tuple[int | None, list[dict]]:
    """Raise N until a level fails, then bisect `refine` times between the last
    level that held and the first that did not. Returns (largest N held, levels)."""
    levels: list[dict] = []
    held: int | None = None
    failed: int | None = None
    n = start
    while n <= max_n:
        level = run(n)
        levels.append(level)
        if not level["held"]:
            failed = n
            break
        held = n
        n = next_n(n, factor, add)
    lo = held if held is not None else 0
    for _ in range(refine):
        if failed is None or failed - lo <= 1:
            break
        mid = (lo + failed) // 2
        level = run(mid)
        levels.append(level)
        if level["held"]:
            lo = held = mid
        else:
            failed = mid
    return held, levels
