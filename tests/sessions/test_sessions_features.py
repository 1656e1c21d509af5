"""A session that stores a version's weights leaves that version's per-card features out of its
events; a restored replay recomputes them from the weights, only when something reads them."""

import copy

import numpy as np
from sessions_helpers import fine_tune_twice

from game.core import events as ev
from game.core.worker import Worker
from game.learning.controller import FineTuneController
from game.learning.layers import layer_choices, next_layer, switch_loaded_layer
from game.sessions.reader import SessionReader
from game.sessions.recorder import SessionRecorder
from game.sessions.replay import ReplayDriver
from game.sessions.restore import restore
from game.sessions.verify import verify_session


def _record(loaded, folder):
    """Two fine-tunes, a layer switch after the second; returns (path, live features by seq)."""
    ws = loaded.workspace
    recorder = SessionRecorder.start(
        loaded.scene, ws, folder=folder, store=loaded.models, layout=loaded.layout
    )
    live: list[tuple[str, int, np.ndarray]] = []

    def keep(event, w):
        if isinstance(event, ev.ModelUpdated | ev.LayerChanged):
            live.append((event.kind, int(w.model_version), np.asarray(event.features).copy()))

    ws.subscribe(keep)
    worker = Worker(torch_threads=1)
    ctl = FineTuneController(loaded, worker, job_process=False)
    try:
        fine_tune_twice(loaded, ctl)
        module = loaded.models.network().module
        assert len(layer_choices(module)) > 1
        switch = switch_loaded_layer(loaded, next_layer(module, ws.feature_layer))
        ws.post(switch.event)
        ws.flush()
    finally:
        ws.unsubscribe(keep)
        ctl.close()
        worker.close(wait=True, timeout=30)
        path = recorder.close()
    return path, live


def test_model_and_layer_events_store_no_features_and_replay_recomputes_them(fresh_digits, tmp_path):
    loaded = fresh_digits
    loaded.scene = copy.deepcopy(loaded.scene)
    path, live = _record(loaded, tmp_path)
    assert [k for k, _, _ in live] == ["model", "model", "layer"]
    assert live[2][2].shape[1] != live[1][2].shape[1]  # the other layer's width

    with SessionReader(path) as reader:
        assert reader.schema_version == 3 and reader.integrity.damage is None
        stored = {
            seq: {
                name
                for (name,) in reader._conn.execute("SELECT name FROM event_arrays WHERE seq = ?", (seq,))
            }
            for (seq,) in reader._conn.execute("SELECT seq FROM events WHERE kind IN ('model', 'layer')")
        }
        assert len(stored) == 3 and all("features" not in names for names in stored.values())
        assert all("positions" in names for names in stored.values())  # the layout is kept exactly
        recorded = [r.event for r in reader.events() if r.event.kind in ("model", "layer")]
        assert all(e.features is None for e in recorded)

        restored = restore(reader)
        ws = restored.workspace
        source = ws.feature_source
        driver = ReplayDriver(reader, ws, auto_flush=True)
        seen = []
        while (item := driver.step()) is not None:
            if item.event.kind in ("model", "layer"):
                assert ws.features_pending == (ws.model_version, ws.feature_layer)
                seen.append(ws)
                np.testing.assert_array_equal(ws.positions, item.event.positions)
                kind, version, features = live[len(seen) - 1]
                assert (kind, version) == (item.event.kind, ws.model_version)
                passes = source.passes
                got = ws.features  # the first read recomputes them from the stored weights
                assert source.passes == passes + 1 and ws.features_pending is None
                np.testing.assert_allclose(got, features, rtol=1e-4, atol=1e-4)
        assert len(seen) == 3

        # A seek lands on pending features too, and a read gives the same numbers.
        driver.seek(0.0)
        assert ws.model_version == 0 and ws.features_pending is None
        driver.seek(driver.duration)
        assert ws.features_pending == (2, ws.feature_layer)
        np.testing.assert_allclose(ws.features, live[2][2], rtol=1e-4, atol=1e-4)

    # --verify re-runs both fine-tunes on a fresh restore; with no features stored it compares
    # the re-run's trainable weights with the stored ones (and predictions, layout as before).
    with SessionReader(path) as reader:
        report = verify_session(restore(reader), progress=False)
    assert report.ok, report.text()
    assert report.checked_models == 2 and report.compared_weights == 2
    assert report.identical_weights == 2 and report.worst["weights_abs"] == 0.0


def test_unrecorded_weights_keep_the_features(tmp_path):
    """Without the version's weights in the file, the features are stored as before."""
    from sessions_helpers import tiny_workspace

    ws = tiny_workspace()
    rec = SessionRecorder(tmp_path / "s.sqlite", None, ws)
    rec.attach(ws)
    rec.record_model(0, b"weights of v0")
    features = np.ones_like(ws.features)
    model = ev.ModelUpdated(1, ws.labels, ws.top5_classes, ws.top5_scores, features, ws.positions)
    layer = ev.LayerChanged("other", features * 2, ws.positions)
    ws.post(layer)  # at v0, whose weights are stored: left out
    ws.post(model)  # v1: no weights stored, kept
    ws.flush()
    rec.close()
    with SessionReader(tmp_path / "s.sqlite") as reader:
        got = [r.event for r in reader.events()]
    assert got[0].features is None
    np.testing.assert_array_equal(got[1].features, features)


def test_a_schema_2_file_with_features_in_its_events_still_replays(tmp_path):
    """Files from before schema 3 carry every model event's features; they replay as recorded."""
    import sqlite3

    from sessions_helpers import tiny_workspace

    ws = tiny_workspace()
    initial = ws.copy()
    rec = SessionRecorder(tmp_path / "old.sqlite", None, ws)
    rec.attach(ws)
    features = np.full_like(ws.features, 0.25)
    ws.post(ev.ModelUpdated(1, ws.labels, ws.top5_classes, ws.top5_scores, features, ws.positions))
    ws.flush()
    rec.close()
    conn = sqlite3.connect(tmp_path / "old.sqlite")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    with SessionReader(tmp_path / "old.sqlite") as reader:
        assert reader.schema_version == 2 and reader.damage is None
        replayed = reader.initial_workspace(initial.images)
        driver = ReplayDriver(reader, replayed, auto_flush=True)
        while driver.step() is not None:
            pass
    assert replayed.model_version == 1 and replayed.features_pending is None
    np.testing.assert_array_equal(replayed.features, features)


def test_a_restore_reads_omitted_starting_features_from_the_feature_cache(
    fresh_digits, tmp_path, monkeypatch
):
    """A large scene's session leaves its starting features out; ``restore`` gets them through
    the content-keyed cache the launch used, so a replay at 50,000 photos does not pass the
    whole network again (it did: about 280 s of a 5,400-card ``replay --verify``)."""
    import game.nets.cache as feature_cache

    loaded = fresh_digits
    scene = loaded.scene
    # The launch's pass, as ``open_scene`` caches it (the test's cache may not hold it yet).
    launch, _ = feature_cache.cached_inference(
        loaded.network,
        loaded.dataset.images,
        scene.network.batch_size,
        images_key=loaded.dataset.content_key,
        stem_layers=None if scene.learning.full_finetune else scene.learning.head_layers,
    )
    path = _record_without_features(loaded, tmp_path, monkeypatch)
    restored, passes = _restore_counting_passes(path, monkeypatch)
    assert passes == []  # read back, not passed again
    np.testing.assert_array_equal(restored.workspace.features, np.asarray(launch.features))


def _restore_counting_passes(path, monkeypatch):
    """``restore`` of a session without starting features, every pass of a network counted (a
    pass through the feature cache's own computation fails at once)."""
    import game.nets.cache as feature_cache
    from game.nets.network import Network

    passes: list[int] = []
    real_infer = Network.infer
    monkeypatch.setattr(Network, "infer", lambda *a, **k: passes.append(1) or real_infer(*a, **k))

    def refuse(*_args, **_kwargs):
        passes.append(1)
        raise AssertionError("the network was passed again: the launch's cache entry was missed")

    monkeypatch.setattr(feature_cache, "_infer_once", refuse)
    with SessionReader(path) as reader:
        assert reader.meta["features_omitted"] == "1"
        return restore(reader), passes


def _record_without_features(loaded, folder, monkeypatch):
    import game.sessions.recorder as recorder_module

    monkeypatch.setattr(recorder_module, "MAX_INITIAL_FEATURES_BYTES", 0)
    recorder = SessionRecorder.start(
        loaded.scene, loaded.workspace, folder=folder, store=loaded.models, layout=loaded.layout
    )
    return recorder.close()


def test_an_image_folder_session_restores_its_features_from_the_launch_cache(tmp_path, monkeypatch):
    """An image folder's launch keys its features by the folder's ``content_key``; the restore
    reads the folder the same way, so it finds them (it missed them when it read the folder
    without the cache: the key was then the images' bytes)."""
    from PIL import Image

    from game.pipeline import open_scene

    rng = np.random.default_rng(0)
    for c, colour in enumerate(((200, 30, 30), (30, 30, 200), (30, 200, 30))):
        (tmp_path / "images" / f"c{c}").mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(np.full((12, 12, 3), colour) + rng.integers(-40, 40, (12, 12, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "images" / f"c{c}" / f"{i}.png")
    (tmp_path / "folder.toml").write_text(
        '[dataset]\nkind = "folder"\npath = "images"\nimage_size = 16\n'
        "[network]\ntrain_epochs = 1\n[layout]\nearly_iterations = 25\niterations = 25\n"
    )
    loaded = open_scene(str(tmp_path / "folder.toml"), progress=False)
    assert loaded.dataset.content_key  # the launch read the folder through the cache
    path = _record_without_features(loaded, tmp_path / "sessions", monkeypatch)
    restored, passes = _restore_counting_passes(path, monkeypatch)
    assert passes == []
    np.testing.assert_array_equal(restored.workspace.features, loaded.workspace.features)


def test_a_restore_with_a_cache_that_cannot_be_written_still_computes_the_features(
    fresh_digits, tmp_path, monkeypatch, capfd
):
    """A read-only or full cache disk (here the cache root is a file) stores nothing, and the
    replay still gets its features: the restore must not fail for a cache it cannot keep."""
    loaded = fresh_digits
    path = _record_without_features(loaded, tmp_path / "sessions", monkeypatch)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache root should be")
    monkeypatch.setenv("LATENT_REACH_CACHE", str(blocked))
    with SessionReader(path) as reader:
        restored = restore(reader)
    np.testing.assert_allclose(restored.workspace.features, loaded.workspace.features, rtol=1e-5, atol=1e-5)
    assert blocked.read_text().startswith("a file")
    # An unusable cache is an absent one, not "damaged" entries said one by one.
    assert "damaged" not in capfd.readouterr().err
