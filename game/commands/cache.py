"""``latent-reach cache``: what the cache folder holds, and emptying it.

The cache keeps what is slow to compute and quick to reuse: trained models, the decoded images of
image folders, features and 3-D layouts, each keyed by its content (see
``game/data/cache_files.py``). It lives in ``$LATENT_REACH_CACHE`` or the user cache folder and
is kept under ``$LATENT_REACH_CACHE_MAX`` (default 10G; ``0``: no cap) by removing the entries
used longest ago. ``--list`` (the default) shows each kind's entries and sizes; ``--clear``
removes every entry (everything is computed again at the next launch).
"""

from __future__ import annotations

import argparse
import time

from game.core.errors import UserError

NAME = "cache"
HELP = "list the cache folder's entries and sizes (--list), or empty it (--clear)"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="each kind's entries and sizes (the default)")
    what.add_argument("--clear", action="store_true", help="remove every cache entry")
    parser.add_argument(
        "--entries", action="store_true", help="--list: every entry, least recently used first"
    )


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def run(args: argparse.Namespace) -> int:
    from game.data import cache_files as cf

    root = cf.cache_root()
    if args.clear:
        count, size = cf.clear()
        print(f"removed {count} cache entr{'y' if count == 1 else 'ies'} ({human(size)}) from {root}")
        return 0
    try:
        cap = cf.size_limit()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    found = cf.entries()
    total = sum(e.size for e in found)
    cap_text = human(cap) if cap is not None else "no cap"
    print(f"cache {root}: {len(found)} entries, {human(total)} (cap {cap_text}, ${cf.LIMIT_ENV})")
    kinds: dict[str, list[cf.Entry]] = {}
    for e in found:
        kinds.setdefault(e.kind, []).append(e)
    for kind in sorted(kinds):
        items = kinds[kind]
        print(
            f"  {kind:<14} {len(items):5d} entr{'y ' if len(items) == 1 else 'ies'} {human(sum(e.size for e in items)):>10}"
        )
    if args.entries:
        for e in found:
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
            print(f"  {used}  {human(e.size):>10}  {e.kind}/{e.path.name}")
    return 0
