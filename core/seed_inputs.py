"""User input of a seed search, checked before any work: seed specs (bounded) and lock thresholds.

Kept apart from :mod:`core.seeds` (the search itself) because the CLI, the nodes, the matched portrait and the
metrics all check the same inputs, and these checks must stay cheap to import.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from .errors import IdentityLockError

MAX_SEED = 2**64 - 1  # ComfyUI's KSampler accepts 0..0xffffffffffffffff
#: Most seeds one search takes. A seed list is materialised (deduplicated, kept in order, reported), so a range
#: like 0:100000000 would take gigabytes before the first render; split bigger searches (or fan them out with
#: ``identitylock queue``).
MAX_SEEDS = 100_000


# -- seeds -----------------------------------------------------------------------------------------------------
def parse_seeds(spec: str | int | Iterable[int]) -> list[int]:
    """'0:32' (range, end exclusive), '0:32:4', '5,17,42', '3' or a list -> seeds in the given order, deduplicated."""
    raw: list[Iterable[int]] = []
    if isinstance(spec, int):
        raw.append([spec])
    elif isinstance(spec, str):
        text = spec.replace(" ", "").replace("\n", ",")
        if not text:
            raise IdentityLockError("seed list is empty: give e.g. '0:32' or '5,17,42'")
        count = 0
        for part in filter(None, text.split(",")):
            try:
                if ":" in part:
                    bits = [int(b) for b in part.split(":")]
                    if len(bits) not in (2, 3) or (len(bits) == 3 and bits[2] <= 0):
                        raise ValueError(part)
                    start, stop, step = bits[0], bits[1], bits[2] if len(bits) == 3 else 1
                    count += max(0, (stop - start + step - 1) // step)  # len() overflows on huge ranges
                    raw.append(range(start, stop, step))
                else:
                    count += 1
                    raw.append([int(part)])
            except ValueError as exc:
                raise IdentityLockError(
                    f"cannot read seed spec {part!r}: use 'start:end' (end exclusive), 'start:end:step' or a "
                    "comma-separated list of integers"
                ) from exc
            if count > MAX_SEEDS:
                raise IdentityLockError(
                    f"seed spec {_short(spec)!r} gives more than {MAX_SEEDS} seeds: search at most {MAX_SEEDS} at "
                    "a time (split the range, or fan out over servers with `identitylock queue`)"
                )
    else:
        try:
            raw.append([int(s) for s in spec])
        except (TypeError, ValueError, OverflowError) as exc:
            raise IdentityLockError(f"seeds must be integers ({exc})") from None
    seen: set[int] = set()
    out = []
    for s in itertools.chain.from_iterable(raw):
        if s < 0 or s > MAX_SEED:
            raise IdentityLockError(f"seed {s} is out of range 0..{MAX_SEED}")
        if s not in seen:
            seen.add(s)
            out.append(s)
            if len(out) > MAX_SEEDS:
                raise IdentityLockError(f"more than {MAX_SEEDS} seeds: search at most {MAX_SEEDS} at a time")
    if not out:
        raise IdentityLockError(f"seed spec {_short(spec)!r} gives no seeds")
    return out


def _short(spec: Any, n: int = 60) -> str:
    text = str(spec)
    return text if len(text) <= n else text[: n - 3] + "..."


def check_threshold(value: Any, what: str = "threshold") -> float | None:
    """A lock threshold from user input: None stays None (the backend default); anything else must pass
    :func:`core.identity.check_threshold` (finite, strictly between 0 and 1) — one rule for the whole pack."""
    if value is None:
        return None
    from .identity import check_threshold as check_lock_threshold

    return check_lock_threshold(value, what)


def seed_range(start: int, count: int) -> list[int]:
    if count < 1:
        raise IdentityLockError("seed count must be at least 1")
    return parse_seeds(range(int(start), int(start) + int(count)))
