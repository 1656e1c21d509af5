"""Wiring the other rooms into a windowed app: fine-tuning, explanations, guidance.

Shared by ``run`` (desktop) and, if the VR launcher wants it, ``game/vr/launch.py``: one place
decides which systems a playable game has, so the two launch paths cannot drift apart.
"""

from __future__ import annotations

import importlib

from game.core import events as ev


def attach_game_systems(app, controls: bool = True, record: bool = False, sessions=None) -> list[str]:
    """Attach the fine-tune controller (a frame hook on the app clock) and, with ``controls``,
    the explanation and guidance key bindings; with ``record``, the session recorder (events,
    poses every frame, every model version) into the ``sessions`` folder. Returns the names of
    the parts attached.

    The controller is rebuilt when the start menu switches scenes. A part that fails to import or
    start is reported in the world and left out, so the game still runs without it.
    """
    attached: list[str] = []
    try:
        from game.learning.controller import FineTuneController

        state: dict = {}

        def attach_controller(loaded) -> None:
            old = state.get("controller")
            if old is not None and old in app.frame_hooks:
                app.frame_hooks.remove(old)
            if old is not None:
                old.close()  # stops listening to the old workspace; ends its job process
            old_recorder = state.get("recorder")
            if old_recorder is not None:
                old_recorder.close()  # its pose hook removes itself once closed
            controller = FineTuneController(loaded, app.worker, clock=lambda: app.now)
            state["controller"] = controller
            app.frame_hooks.append(controller)
            if record:
                from game.commands._session_world import start_recording

                state["recorder"] = start_recording(app, controller, folder=sessions)

        attach_controller(app.loaded)
        app.scene_listeners.append(attach_controller)
        app.finetune = state
        attached.append("FineTuneController")
    except Exception as exc:  # the world stays usable without learning
        app.workspace.post(ev.Message(text=f"fine-tuning unavailable: {exc}", level="warning"))
    if not controls:
        return attached
    for module, cls, attr in (
        ("game.controls.explain_controls", "ExplainControls", "explain"),
        ("game.controls.guidance_controls", "GuidanceControls", "guidance"),
    ):
        if getattr(app, attr, None) is not None:
            # LatentReachApp(controls=True) made it already; a second copy would answer every key twice.
            attached.append(cls)
            continue
        try:
            part = getattr(importlib.import_module(module), cls)(app)
            setattr(app, attr, part)
            app.frame_hooks.append(part)
            attached.append(cls)
        except Exception as exc:
            app.workspace.post(ev.Message(text=f"{cls} unavailable: {exc}", level="warning"))
    return attached
