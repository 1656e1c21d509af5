"""The playable game's wiring: one assembly for every launch, typed systems, no import cycles."""

import ast
import re
from pathlib import Path

import numpy as np

from game.core import events as ev

GAME = Path(__file__).resolve().parents[2] / "game"


def test_live_game_records_events_poses_and_models(fresh_digits, tmp_path: Path):
    from game.assembly import open_game
    from game.commands._session_world import session_recording
    from game.learning.controller import FineTuneController
    from game.sessions.reader import SessionReader
    from game.sessions.recorder import SessionRecorder

    game = open_game(
        fresh_digits,
        offscreen=True,
        size=(160, 100),
        multisamples=0,
        learning=True,
        recording=session_recording(tmp_path),
    )
    app = game.app
    try:
        assert isinstance(game.controller, FineTuneController) and isinstance(game.recorder, SessionRecorder)
        assert game.controls is None and game.menu is None and game.vr is None
        assert game.controller in app.frame_hooks
        app.workspace.post(ev.CardSelected(card=4))
        for _ in range(5):
            app.step(1 / 30)
        game.recorder.close()
    finally:
        app.destroy()
    files = sorted(tmp_path.glob("*.sqlite"))
    assert len(files) == 1
    with SessionReader(files[0]) as reader:
        kinds = [r.event.kind for r in reader.events()]
        assert "select" in kinds
        poses = reader.poses()
        assert len(poses.times) >= 5
        assert np.isfinite(poses.device("head")).all()
        assert [v for v, *_ in reader.model_versions()] == [0]


def test_scene_switch_rebuilds_learning_and_rebinds_controls(fresh_digits, tmp_path: Path):
    """The start menu opening another scene: a new controller and a new session file, the
    controls on the new workspace, and the old controller no longer listening."""
    from game.assembly import open_game
    from game.commands._session_world import session_recording
    from game.controls.modes import Mode

    game = open_game(
        fresh_digits,
        offscreen=True,
        size=(160, 100),
        multisamples=0,
        controls=True,
        menu=True,
        learning=True,
        recording=session_recording(tmp_path),
    )
    app = game.app
    try:
        assert game.modes.top is Mode.MENU  # the start menu is shown and has the keys
        assert app.frame_hooks[0] is game.controls
        old_controller, old_recorder = game.controller, game.recorder
        game.menu.hide()
        assert game.modes.top is Mode.WORLD
        other = fresh_digits.__class__(
            fresh_digits.scene,
            fresh_digits.dataset,
            fresh_digits.network,
            fresh_digits.projector,
            fresh_digits.layout,
            fresh_digits.workspace.copy(),
            {},
        )
        app.switch_scene(other)
        app.step(1 / 30)
        assert app.workspace is other.workspace
        assert game.controller is not None and game.controller is not old_controller
        assert old_controller not in app.frame_hooks and game.controller in app.frame_hooks
        assert old_recorder.closed and game.recorder is not None and not game.recorder.closed
        assert game.controls.hand.workspace is other.workspace
        assert game.explain._workspace is other.workspace and game.guidance._workspace is other.workspace
        assert game.menu.scene.workspace is other.workspace and game.menu.scene.world is app.world
        assert game.menu.prestart is not None  # a game that fine-tunes prestarts the next scene's child
    finally:
        app.destroy()
    assert len(sorted(tmp_path.glob("*.sqlite"))) == 2  # one session per scene shown


def test_esc_routes_through_the_mode_stack_and_never_quits(fresh_digits):
    from game.assembly import open_game
    from game.controls.modes import Mode

    game = open_game(fresh_digits, offscreen=True, size=(160, 100), multisamples=0, controls=True)
    app = game.app
    quits: list[bool] = []
    app.userExit = lambda: quits.append(True)  # what Ctrl+Q and the close button call
    try:
        hud = app.world.hud
        game.controls.toggle_help()
        assert not hud.help_path.is_hidden()
        app.messenger.send("escape")  # no menu: Esc closes the help, and does not quit
        assert hud.help_path.is_hidden() and not quits
        app.messenger.send("escape")
        assert not quits and game.modes.top is Mode.WORLD
        app.workspace.post(ev.CardSelected(card=3))
        app.step(1 / 30)
        game.explain.toggle_paint()
        assert game.modes.top is Mode.PAINT and not game.controls.enabled
        app.messenger.send("escape")  # Esc stops painting
        assert not game.explain.painting and game.modes.top is Mode.WORLD and game.controls.enabled
        app.messenger.send("control-q")
        assert quits == [True]
    finally:
        app.destroy()


def test_menu_scene_switch_prestarts_the_job_process(fresh_digits, monkeypatch):
    """Opening a scene from the start menu starts its job process before the scene loads (as
    ``latent-reach run`` does for the first one), and the new controller trains in that child."""
    import copy

    import game.pipeline
    from game.assembly import open_game
    from game.learning import backend
    from game.pipeline import LoadedScene

    path = GAME.parent / "scenes" / "digits.toml"
    seen: dict[str, object] = {}

    def open_scene(scene, progress=True, use_cache=True):  # the scene as the menu loaded it
        seen["learning"] = scene.learning
        seen["waiting"] = dict(backend._PRESTARTED)  # what was prestarted before the load began
        src = fresh_digits
        return LoadedScene(
            scene,
            src.dataset,
            src.network.clone(),
            src.projector,
            copy.deepcopy(src.layout),
            src.workspace.copy(),
        )

    monkeypatch.setattr(game.pipeline, "open_scene", open_scene)
    game = open_game(fresh_digits, offscreen=True, size=(160, 100), multisamples=0, menu=True, learning=True)
    app = game.app
    old = app.workspace
    try:
        game.menu.open_scene(path)
        for _ in range(2000):
            if app.workspace is not old:
                break
            app.step(1 / 30)
        assert app.workspace is not old, "the scene never opened"
        config = seen["learning"]
        assert config.job_process  # digits.toml trains in a child process
        key = (max(int(config.torch_threads or 1), 1), int(config.job_nice))
        waiting = seen["waiting"]
        assert key in waiting, f"nothing prestarted before the load: {waiting}"
        controller = game.controller
        assert controller is not None and controller.loaded.workspace is app.workspace
        primary = controller.backend.primary
        assert primary is not None and primary.process is waiting[key]  # taken, not a second child
        assert key not in backend._PRESTARTED
    finally:
        app.destroy()
        with backend._PRESTART_LOCK:
            left = list(backend._PRESTARTED.values())
            backend._PRESTARTED.clear()
        for process in left:
            process.close()


# --- structure --------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Modules of ``game`` that ``path`` imports at run time (lazy imports in functions too;
    ``if TYPE_CHECKING:`` blocks left out: they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    package = ".".join(path.relative_to(GAME.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("game"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.startswith("game"):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] in (["game", "app"], ["game", "assembly"]):
        return parts[1]
    if len(parts) > 2 and parts[1] in ("world", "controls", "vr", "commands"):
        return parts[1]
    return None


def test_no_import_cycle_among_the_engine_rooms():
    """app, assembly, world, controls, vr and commands import each other in one direction only
    (checked from the source, lazy imports included): commands -> assembly -> app -> world."""
    files = {
        ".".join(p.relative_to(GAME.parent).with_suffix("").parts): p
        for p in GAME.rglob("*.py")
        if p.name != "__init__.py"
    }
    edges: dict[str, set[str]] = {}
    for module, path in files.items():
        room = _room(module)
        if room is None:
            continue
        for target in _imports(path):
            other = _room(target)
            if other is not None and other != room and target in files:
                edges.setdefault(room, set()).add(other)
    # app/world/commands/vr must not reach back up; print the graph on failure.
    order = ["world", "app", "controls", "vr", "assembly", "commands"]
    back = {(a, b) for a, targets in edges.items() for b in targets if order.index(b) > order.index(a)}
    # Known exceptions, each one module that could move down a room: controls/vr_controls uses
    # vr.backend's types; world/view_report uses controls.hand.pick_ray (pure numpy).
    allowed = {("controls", "vr"), ("world", "controls")}
    assert back <= allowed, f"upward imports: {sorted(back - allowed)}; graph {edges}"
    # And no module-level cycle at all (what would break an import).
    graph = {m: {t for t in _imports(p) if t in files} for m, p in files.items() if _room(m)}
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        seen[m] = 1
        for t in graph.get(m, ()):
            if seen.get(t) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*stack, m, t])}")
            if t not in seen:
                visit(t, [*stack, m])
        seen[m] = 2

    for m in graph:
        if m not in seen:
            visit(m, [])


SYSTEMS = "controls|explain|guidance|menu|finetune|vr_session|vr|learning|controller|recorder"
BOLTED = re.compile(
    rf"setattr\((self\.)?app\b|getattr\((self\.)?app, *[\"']({SYSTEMS})[\"']|\bapp\.(finetune|vr_session)\b"
)


def test_nothing_is_bolted_onto_the_app():
    """Game systems live in GameSystems: none is set on the app at run time or looked up there
    by name (the same check as ``grep -rnE`` with this pattern over game/)."""
    offenders = []
    for path in GAME.rglob("*.py"):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if BOLTED.search(line):
                offenders.append(f"{path.relative_to(GAME.parent)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


APP_TYPES = re.compile(r"\b(LatentReachApp|ShowBase|GameView|MenuHost)\b")


def test_controls_get_narrow_services_not_the_app(fresh_digits):
    """No control takes the app (by name or by type) or keeps it: they get a Viewport, the
    scene's parts, the worker and plain callables from game.assembly (game/controls/services.py)."""
    offenders = []
    for path in sorted((GAME / "controls").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(GAME.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                a = node.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                    hint = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                    if arg.arg in ("app", "base", "showbase") or APP_TYPES.search(hint):
                        offenders.append(f"{where}:{node.lineno}: __init__ takes {arg.arg}: {hint}")
            elif isinstance(node, ast.Attribute) and ast.unparse(node) == "self.app":
                offenders.append(f"{where}:{node.lineno}: self.app")
    assert not offenders, "\n".join(offenders)

    # And at run time: no assembled control holds a ShowBase in any attribute.
    from direct.showbase.ShowBase import ShowBase

    from game.assembly import open_game

    game = open_game(fresh_digits, offscreen=True, size=(160, 100), multisamples=0, controls=True, menu=True)
    try:
        assert game.menu is not None and game.menu.prestart is None  # no learning: no child to prestart
        for part in (game.controls, game.explain, game.guidance, game.menu):
            assert part is not None
            held = [name for name, value in vars(part).items() if isinstance(value, ShowBase)]
            assert not held, f"{type(part).__name__} keeps the app in {held}"
    finally:
        game.app.destroy()
