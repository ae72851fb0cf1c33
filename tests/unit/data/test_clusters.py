"""The cluster tree of draw_megatron.data.clusters on synthetic embeddings (no model needed)."""

import numpy as np
import pytest

from draw_megatron.data.clusters import ClusterError, ClusterTree, fit_tree, nearest


def _blobs(num_centres: int, per_centre: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_centres, dim)) * 4
    x = np.repeat(centres, per_centre, axis=0) + rng.normal(size=(num_centres * per_centre, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # unit rows, as the model gives
    return x.astype(np.float32)


def test_fit_labels_equal_assign_and_names_sort_in_tree_order():
    emb = _blobs(9, 12)
    tree, leaves = fit_tree(emb, k=3, levels=2, seed=0, meta={"model": {"id": "m"}})
    np.testing.assert_array_equal(tree.assign(emb), leaves)
    names = tree.leaf_names()
    assert names[:4] == ["c0.c0", "c0.c1", "c0.c2", "c1.c0"] and names == sorted(names)
    assert tree.node_name(1, 2) == "c2"
    # A leaf's parent is the top cluster its units are nearest to.
    top = nearest(emb, tree.centroids[0], tree.counts[0] > 0)
    np.testing.assert_array_equal(leaves // 3, top)
    assert tree.counts[1].sum() == len(emb) and tree.counts[0].sum() == len(emb)
    np.testing.assert_array_equal(tree.counts[1], np.bincount(leaves, minlength=9))


def test_inactive_nodes_are_never_chosen():
    # 5 points, k=4, levels=2: some top clusters hold fewer points than k, so some leaves
    # stay empty; c(x) of any point must avoid them.
    emb = _blobs(5, 1, seed=3)
    tree, leaves = fit_tree(emb, k=2, levels=2, seed=1)
    assert tree.counts[1].sum() == 5
    probe = _blobs(50, 1, seed=7)
    assert set(tree.assign(probe).tolist()) <= set(tree.active_leaves().tolist())
    with pytest.raises(ClusterError, match="3 training units .* cannot fill 4 clusters"):
        fit_tree(emb[:3], k=2, levels=2)


def test_flat_names_are_zero_padded():
    emb = _blobs(4, 30)
    tree, _ = fit_tree(emb, k=12, levels=1)
    assert tree.leaf_names()[:2] == ["c00", "c01"] and tree.leaf_names()[-1] == "c11"


def test_duplicate_points_leave_empty_clusters_not_errors():
    emb = np.repeat(_blobs(2, 1), 10, axis=0)  # 2 distinct points, 20 rows
    tree, leaves = fit_tree(emb, k=4, levels=1)
    assert len(set(leaves.tolist())) == 2 and (tree.counts[0] > 0).sum() == 2
    np.testing.assert_array_equal(tree.assign(emb), leaves)


def test_save_load_round_trip_and_damage(tmp_path):
    emb = _blobs(6, 8)
    tree, leaves = fit_tree(emb, k=3, levels=2, seed=5, meta={"chunk_chars": 200})
    path = str(tmp_path / "clusters.npz")
    tree.save(path)
    loaded = ClusterTree.load(str(tmp_path))  # the folder holding clusters.npz also works
    assert loaded.meta == {"chunk_chars": 200} and loaded.fingerprint() == tree.fingerprint()
    np.testing.assert_array_equal(loaded.assign(emb), leaves)
    data = dict(np.load(path))
    data["centroids_1"] = data["centroids_1"] + 1
    np.savez(path, **data)
    with pytest.raises(ClusterError, match="do not match the fingerprint"):
        ClusterTree.load(path)
    with pytest.raises(ClusterError, match="does not exist"):
        ClusterTree.load(str(tmp_path / "nope.npz"))
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ClusterError, match="cannot read clusters file"):
        ClusterTree.load(str(tmp_path / "bad.npz"))


def test_assign_checks_the_dimension():
    tree, _ = fit_tree(_blobs(3, 5), k=3, levels=1)
    with pytest.raises(ClusterError, match="dimension 16"):
        tree.assign(np.zeros((2, 8), dtype=np.float32))


def test_three_levels_name_every_level():
    emb = _blobs(8, 6)
    tree, leaves = fit_tree(emb, k=2, levels=3, seed=2)
    assert tree.leaf_names()[:3] == ["c0.c0.c0", "c0.c0.c1", "c0.c1.c0"]
    assert [c.shape[0] for c in tree.centroids] == [2, 4, 8]
    np.testing.assert_array_equal(tree.assign(emb), leaves)
