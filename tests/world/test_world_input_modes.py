"""The input-mode stack (engine-free): who gets the keys, and what Esc does in each mode."""

from __future__ import annotations

from game.controls.modes import InputModes, Mode


def test_world_is_the_floor_and_modes_stack_over_it():
    modes = InputModes()
    assert modes.top is Mode.WORLD and modes.stack == (Mode.WORLD,)
    assert not modes.pop(Mode.WORLD) and not modes.push(Mode.WORLD)  # never pushed or popped
    assert modes.push(Mode.PAINT) and modes.push(Mode.MENU)
    assert modes.stack == (Mode.WORLD, Mode.PAINT, Mode.MENU)
    assert not modes.push(Mode.MENU)  # already there: nothing changes
    assert modes.pop(Mode.MENU) and modes.top is Mode.PAINT
    assert modes.push(Mode.DRAG)
    assert modes.pop(Mode.PAINT)  # taken out from under the drag
    assert modes.stack == (Mode.WORLD, Mode.DRAG)
    modes.reset()
    assert modes.stack == (Mode.WORLD,)


def test_keys_act_only_for_the_top_mode():
    modes = InputModes()
    calls: list[str] = []
    world_key = modes.when(Mode.WORLD, Mode.DRAG)(lambda: calls.append("world"))
    menu_key = modes.when(Mode.MENU)(lambda: calls.append("menu"))
    world_key()
    menu_key()
    modes.push(Mode.MENU)
    world_key()
    menu_key()
    assert calls == ["world", "menu"]


def test_escape_calls_the_top_handler_and_never_the_base_one_above_it():
    calls: list[str] = []
    modes = InputModes(on_base_escape=lambda: calls.append("base"))
    seen: list[Mode] = []
    modes.listeners.append(seen.append)

    def cancel_drag() -> None:
        calls.append("cancel")
        modes.pop(Mode.DRAG)

    modes.push(Mode.PAINT)  # no handler: Esc just pops it
    modes.push(Mode.DRAG, on_escape=cancel_drag)
    modes.escape()
    assert calls == ["cancel"] and modes.top is Mode.PAINT
    modes.escape()
    assert calls == ["cancel"] and modes.top is Mode.WORLD
    modes.escape()
    assert calls == ["cancel", "base"] and modes.top is Mode.WORLD
    assert seen == [Mode.PAINT, Mode.DRAG, Mode.PAINT, Mode.WORLD]
