"""Keys that must stay quiet while the start menu is open.

The menu takes the keyboard while it is shown; the explanation and guidance keys (X, N, L, ...)
would otherwise act on the world hidden behind it. One wrapper, shared by every control set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def unless_menu_open(app: Any, fn: Callable[..., Any]) -> Callable[..., None]:
    """``fn`` wrapped to do nothing while ``app.menu`` exists and is visible."""

    def call(*args: Any) -> None:
        menu = getattr(app, "menu", None)
        if menu is not None and menu.visible:
            return
        fn(*args)

    return call
