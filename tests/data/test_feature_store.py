"""The feature store (issue 17 item 3): its format, features computed on a local Dask cluster
started here (2 workers, threads of this process), and the app opening a sample of a store."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from game.data.feature_store import FeatureStoreError, StoreWriter, open_store

needs_dask = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask[distributed] is not installed (pip install 'latent-reach[cluster]')",
)


def test_writer_squeezes_out_skipped_rows_and_the_features_map(tmp_path):
    rng = np.random.default_rng(0)
    n, dim = 10, 3
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    top5c = rng.integers(0, 3, (n, 3))
    top5s = rng.random((n, 3)).astype(np.float32)
    labels = np.arange(n) % 3
    writer = StoreWriter(tmp_path / "store", n, dim, 3)
    for block in ([5, 6, 7, 8, 9], [0, 1, 3, 4]):  # out of order, card 2 never readable
        writer.write(np.array(block), feats[block], top5c[block], top5s[block])
    writer.skip(2, "corrupt or truncated")
    writer.skip(8, "oversized")  # written first, then found unusable: still left out
    store = writer.finish([f"img{i}.png" for i in range(n)], labels, ["a", "b", "c"], {"fingerprint": "x"})
    keep = [0, 1, 3, 4, 5, 6, 7, 9]
    again = open_store(tmp_path / "store")
    assert isinstance(again.features, np.memmap) and again.features.dtype == np.float32
    for s in (store, again):
        np.testing.assert_array_equal(s.features, feats[keep])
        np.testing.assert_array_equal(s.top5_classes, top5c[keep])
        np.testing.assert_array_equal(s.labels, labels[keep])
        assert s.sources == [f"img{i}.png" for i in keep]
        assert s.skipped == [("img2.png", "corrupt or truncated"), ("img8.png", "oversized")]
        assert s.meta["n_cards"] == 8 and s.meta["dim"] == dim and s.class_names == ["a", "b", "c"]
    assert (tmp_path / "store" / "cards.csv").read_text().splitlines()[:2] == ["path,label", "img0.png,a"]
    assert not (tmp_path / "store.partial").exists()


def test_unfinished_damaged_or_foreign_stores_are_refused(tmp_path):
    writer = StoreWriter(tmp_path / "s", 4, 2, 2)
    writer.write(np.arange(4), np.ones((4, 2), np.float32), np.zeros((4, 2), np.int64), np.ones((4, 2)))
    writer.finish(["a", "b", "c", "d"], np.array([0, 1, 0, 1]), ["x", "y"], {})
    np.save(tmp_path / "s" / "labels.npy", np.zeros(3, np.int64))
    with pytest.raises(FeatureStoreError, match="damaged: labels has 3 rows, meta.json says 4"):
        open_store(tmp_path / "s")
    (tmp_path / "s" / "meta.json").unlink()
    with pytest.raises(FeatureStoreError, match="not a finished feature store"):
        open_store(tmp_path / "s")
    with pytest.raises(FeatureStoreError, match="not found"):
        open_store(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(FeatureStoreError, match="not a Latent Reach feature store"):
        open_store(tmp_path / "other")


def _image_folder(root):
    rng = np.random.default_rng(1)
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            px = rng.integers(0, 80, (16, 16, 3), dtype=np.uint8)
            px[..., c] += 150
            Image.fromarray(px).save(root / name / f"{i}.png")
    (root / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


@needs_dask
@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_a_local_cluster_reads_the_paths_and_matches_one_machine(tmp_path, processes):
    # Process workers pickle the network and the blocks as a real cluster does (issue 17 audit:
    # thread workers never did).
    from game.data.folder import _entries_from_subfolders, load_image_folder
    from game.nets.architectures import build_module
    from game.nets.distributed import Cards, close_client, compute_feature_store, local_client
    from game.nets.network import Network

    _image_folder(tmp_path / "images")
    torch.manual_seed(0)
    network = Network(build_module("small_cnn", 3, 3), "small_cnn", 3, 3, 16)
    entries, names, _ = _entries_from_subfolders(tmp_path / "images")
    cards = Cards(
        [str(p) for p, _ in entries],
        np.array([label for _, label in entries]),
        names,
        paths=[str(p) for p, _ in entries],
        image_size=16,
    )
    client = local_client(2, processes=processes)
    try:
        assert len(client.nthreads()) == 2
        done = []
        store = compute_feature_store(
            network,
            cards,
            str(tmp_path / "store"),
            client,
            block_size=5,
            progress=lambda d, t: done.append(t),
        )
    finally:
        close_client(client)
    assert len(done) == 3  # 13 listed images in blocks of 5
    one = load_image_folder(tmp_path / "images", image_size=16, progress=False)
    expected = network.infer(one.images)
    assert store.n_cards == 12 == len(one.images)
    assert [s for s, _ in store.skipped] == [str(tmp_path / "images" / "green" / "broken.png")]
    assert "corrupt" in store.skipped[0][1] or "not an image" in store.skipped[0][1]
    np.testing.assert_allclose(store.features, expected.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(store.top5_classes, expected.top5_classes)
    np.testing.assert_array_equal(store.labels, one.labels)
    assert store.meta["arch"] == "small_cnn" and store.meta["image_size"] == 16


FAST = """
[layout]
early_iterations = 50
iterations = 100
update_iterations = 40
"""


@needs_dask
def test_features_command_then_the_app_shows_a_sample(tmp_path, loaded_digits, capsys, monkeypatch):
    from game.cli import main
    from game.pipeline import open_scene

    (tmp_path / "plain.toml").write_text('[dataset]\nkind = "digits"\n' + FAST)
    code = main(
        ["features", "--scene", str(tmp_path / "plain.toml"), "--out", str(tmp_path / "store")]
        + ["--workers", "2", "--in-process", "--block", "500", "--quiet"]
    )
    assert code == 0, capsys.readouterr()
    store = open_store(tmp_path / "store")
    assert store.n_cards == 1797 and store.features.shape[1] == loaded_digits.workspace.features.shape[1]
    # The same network on one machine gives the same features.
    np.testing.assert_allclose(store.features, loaded_digits.workspace.features, rtol=1e-4, atol=1e-5)
    capsys.readouterr()

    (tmp_path / "view.toml").write_text(
        '[dataset]\nkind = "digits"\nfeatures = "store"\nmax_cards = 300\n' + FAST
    )
    loaded = open_scene(str(tmp_path / "view.toml"), progress=False)
    ws = loaded.workspace
    rows = np.array([int(s.split("#")[1]) for s in ws.sources])
    assert ws.n_cards == 300 and len(set(rows)) == 300
    np.testing.assert_array_equal(ws.features, store.features[rows])
    np.testing.assert_array_equal(ws.labels, store.labels[rows])
    np.testing.assert_array_equal(ws.top5_classes, store.top5_classes[rows])
    np.testing.assert_array_equal(ws.images, loaded_digits.dataset.images[rows])
    assert np.isfinite(ws.positions).all() and ws.positions.shape == (300, 3)
    err = capsys.readouterr().err
    assert "showing 300 of 1797 cards" in err and "the other 1497 are left out" in err
    assert loaded.rest is None

    # place_rest: the other cards are placed by openTSNE's transform against the shown layout
    # (kept with the scene, not drawn), next to the shown cards of their class.
    (tmp_path / "rest.toml").write_text(
        '[dataset]\nkind = "digits"\nfeatures = "store"\nmax_cards = 300\nplace_rest = true\n' + FAST
    )
    placed = open_scene(str(tmp_path / "rest.toml"), progress=False)
    assert placed.workspace.n_cards == 300  # the world shows no more than max_cards
    np.testing.assert_array_equal(placed.workspace.positions, ws.positions)  # the same layout
    rest = placed.rest
    assert rest is not None and len(rest.rows) == 1497 and rest.positions.shape == (1497, 3)
    assert not set(rest.rows.tolist()) & set(rows.tolist())
    assert np.isfinite(rest.positions).all()
    d = np.linalg.norm(rest.positions[:, None] - ws.positions[None], axis=2)
    assert np.mean(ws.labels[d.argmin(1)] == store.labels[rest.rows]) > 0.8
    err = capsys.readouterr().err
    assert "the other 1497 are placed by openTSNE's transform" in err and "not drawn" in err

    # A session recorded on this scene restores the same sample (replay, verify, export).
    from game.sessions.reader import SessionReader
    from game.sessions.recorder import SessionRecorder
    from game.sessions.restore import restore

    recorder = SessionRecorder.start(loaded.scene, ws, folder=tmp_path / "sessions", layout=loaded.layout)
    path = recorder.close()
    with SessionReader(path) as reader:
        restored = restore(reader)
        np.testing.assert_array_equal(restored.workspace.images, ws.images)
        assert restored.workspace.sources == ws.sources
    # A session that left its starting features out (a large scene's) gets the store's rows
    # back, the launch's own features: no pass of the network, nothing written to the cache.
    import game.nets.cache as feature_cache
    import game.sessions.recorder as recorder_module

    monkeypatch.setattr(recorder_module, "MAX_INITIAL_FEATURES_BYTES", 0)
    monkeypatch.setattr(feature_cache, "cached_inference", lambda *a, **k: 1 / 0)
    recorder = SessionRecorder.start(
        loaded.scene, ws, folder=tmp_path / "sessions2", store=loaded.models, layout=loaded.layout
    )
    with SessionReader(recorder.close()) as reader:
        assert reader.meta["features_omitted"] == "1"
        np.testing.assert_array_equal(restore(reader).workspace.features, ws.features)

    (tmp_path / "other.toml").write_text(
        '[dataset]\nkind = "digits"\nfeatures = "store"\n[network]\nfeature_layer = "features.pool2"\n'
    )
    with pytest.raises(FeatureStoreError, match="computed by another network"):
        open_scene(str(tmp_path / "other.toml"), progress=False)


@needs_dask
def test_features_command_on_a_running_scheduler(tmp_path, capsys):
    """``--scheduler ADDRESS``: the command as pointed at a real cluster (here one started in
    the test, its workers threads of this process)."""
    import distributed

    from game.cli import main
    from game.pipeline import open_scene

    _image_folder(tmp_path / "images")
    scene = tmp_path / "folder.toml"
    scene.write_text(
        '[dataset]\nkind = "folder"\npath = "images"\nimage_size = 16\n[network]\ntrain_epochs = 2\n' + FAST
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        code = main(
            ["features", "--scene", str(scene), "--out", str(tmp_path / "store")]
            + ["--scheduler", cluster.scheduler_address, "--block", "4", "--quiet"]
        )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "12 cards" in out and "1 image(s) skipped" in out
    store = open_store(tmp_path / "store")
    assert store.n_cards == 12 and store.class_names == ["blue", "green", "red"]

    view = tmp_path / "view.toml"
    view.write_text(
        scene.read_text().replace("image_size = 16\n", 'image_size = 16\nfeatures = "store"\nmax_cards = 9\n')
    )
    loaded = open_scene(str(view), progress=False)
    assert loaded.workspace.n_cards == 9
    assert "showing 9 of 12 cards" in capsys.readouterr().err
