#!/usr/bin/env python3
"""Plots of data mixtures and their effect (PNG, written atomically).

  simplex  samples of the uniform prior Dir((√n/k)·1) next to samples of a mixture file's
           Dirichlet, projected onto three domains (renormalised) on a 2-D simplex, like
           DRAW's Figure 2. n comes from the file's provenance (n2) or --width.
  alpha    the α trajectory per domain over steps, from a run's metrics.jsonl records of
           kind dro, mixture or dga (DGA's α_EMA and DRO's running mean α* dashed).
  losses   per-domain validation loss curves of one or more runs, one panel per domain
           plus the average and the worst case (eval records).
  hierarchy  both levels of a hierarchical Dirichlet mixture file: the group weights'
           E[w] ± sd, and each domain's E[α] ± sd coloured by its group (exact moments).

Examples:
  python tools/plot_mixture.py simplex --mixture mixtures/draw_1B.json \\
      --domains Pile-CC Github ArXiv --out plots/simplex.png
  python tools/plot_mixture.py alpha --metrics runs/proxy_dro/metrics.jsonl --kind dro \\
      --out plots/alpha.png
  python tools/plot_mixture.py losses runs/draw runs/natural runs/random --out plots/loss.png
  python tools/plot_mixture.py hierarchy mixtures/draw_1B_groups.json --out plots/hier.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

import numpy as np

from draw_megatron.data.manifest import Manifest, ManifestError
from draw_megatron.mixture.draw import dirichlet_moments, prior_concentration
from draw_megatron.mixture.files import MixtureFileError, MixtureSpec, load_mixture
from draw_megatron.mixture.hierarchical import HIERARCHICAL_KIND
from draw_megatron.train.metrics import METRICS_NAME, read_metrics

_SQRT3_2 = math.sqrt(3.0) / 2.0


class ToolError(Exception):
    """A problem with the inputs, reported as one line on stderr (exit status 1)."""


# --------------------------------------------------------------------------- helpers


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ToolError("matplotlib is not installed: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str) -> None:
    """Write ``fig`` to ``path`` through a temporary sibling (never a half-written PNG)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", suffix=".png",
                               dir=parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def domain_colors(plt, k: int) -> list:
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20" if k <= 20 else "turbo")
    return [cmap(i if k <= 20 else i / max(k - 1, 1)) for i in range(k)]


def manifest_names(run_dir: str) -> list[str]:
    """Domain names of a run: its config.yaml's data.root → manifest.json."""
    import yaml

    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as fh:
        root = yaml.safe_load(fh)["data"]["root"]
    return Manifest.load(root).domain_names


def run_domain_names(run_dir: str, k: int) -> list[str] | None:
    """The run's domain names if readable and k of them, else None (with a note on stderr)."""
    try:
        names = manifest_names(run_dir)
    except (OSError, KeyError, TypeError, ValueError, ManifestError) as exc:
        print(f"note: no domain names for {run_dir} ({exc})", file=sys.stderr)
        return None
    if len(names) != k:
        print(f"note: {run_dir}'s manifest names {len(names)} domains but its records hold {k}",
              file=sys.stderr)
        return None
    return names


def _indices(k: int) -> list[str]:
    return [f"domain {i}" for i in range(k)]


def _metrics_records(path: str, kind: str) -> list[dict]:
    if not os.path.isfile(path):
        raise ToolError(f"{path} does not exist")
    records = read_metrics(path, kind)
    if not records:
        raise ToolError(f"{path} has no {kind!r} records")
    return records


# --------------------------------------------------------------------------- simplex


def ternary_xy(points_N3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian coordinates of barycentric points: vertices (0, 0), (1, 0), (½, √3/2)."""
    return points_N3[:, 1] + 0.5 * points_N3[:, 2], _SQRT3_2 * points_N3[:, 2]


def project(samples_NK: np.ndarray, index: list[int]) -> np.ndarray:
    """The chosen three coordinates of each sample, renormalised to sum to 1."""
    sub = samples_NK[:, index]
    return sub / sub.sum(axis=1, keepdims=True)


def _simplex_width(spec: MixtureSpec, width: float | None, path: str) -> float:
    if width is not None:
        return width
    n = spec.provenance.get("n2")
    if not isinstance(n, (int, float)) or n <= 0:
        raise ToolError(f"{path} records no main width (provenance n2): pass --width")
    return float(n)


def _simplex_panel(ax, points_N3: np.ndarray, mean3: np.ndarray, names: list[str],
                   title: str, color) -> None:
    ax.plot([0, 1, 0.5, 0], [0, 0, _SQRT3_2, 0], color="black", lw=0.8)
    x, y = ternary_xy(points_N3)
    ax.scatter(x, y, s=4, alpha=0.35, color=color, edgecolors="none")
    mx, my = ternary_xy(mean3[None, :])
    ax.scatter(mx, my, marker="*", s=140, color="black", label="E[α] (projected)")
    for (vx, vy), name, ha, va in zip([(0, 0), (1, 0), (0.5, _SQRT3_2)], names,
                                      ["right", "left", "center"], ["top", "top", "bottom"]):
        ax.text(vx, vy, name, ha=ha, va=va, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.1, 1.0)
    ax.axis("off")
    ax.legend(loc="upper right", fontsize=8, frameon=False)


def cmd_simplex(args: argparse.Namespace) -> None:
    try:
        spec = load_mixture(args.mixture)
    except MixtureFileError as exc:
        raise ToolError(str(exc)) from None
    if spec.kind != "dirichlet":
        raise ToolError(f"{args.mixture}: simplex plots a Dirichlet mixture file, not kind "
                        f"{spec.kind!r}")
    if len(set(args.domains)) != 3:
        raise ToolError(f"--domains needs three different names, got {args.domains}")
    unknown = [d for d in args.domains if d not in spec.domains]
    if unknown:
        raise ToolError(f"{args.mixture} has no domain(s) {unknown}; it has {spec.domains}")
    if args.samples < 1:
        raise ToolError(f"--samples {args.samples} must be >= 1")
    n = _simplex_width(spec, args.width, args.mixture)
    index = [spec.domains.index(d) for d in args.domains]
    prior = prior_concentration(len(spec.domains), n)
    rng = np.random.default_rng(args.seed)
    panels = [(prior, f"prior Dir((√n/k)·1), n = {n:g}, k = {len(spec.domains)}"),
              (spec.values, f"{os.path.basename(args.mixture)}: Dir(β), Σβ = "
                            f"{spec.values.sum():.3g}")]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (beta, title), color in zip(axes, panels, ["tab:gray", "tab:blue"]):
        samples = rng.dirichlet(beta, size=args.samples)
        mean3 = project(dirichlet_moments(beta)[0][None, :], index)[0]
        _simplex_panel(ax, project(samples, index), mean3, list(args.domains), title, color)
    fig.suptitle(f"{args.samples} draws each, projected onto 3 domains (renormalised)",
                 fontsize=10)
    save_png(fig, args.out)
    plt.close(fig)


# --------------------------------------------------------------------------- alpha


def cmd_alpha(args: argparse.Namespace) -> None:
    records = _metrics_records(args.metrics, args.kind)
    steps = np.array([r["step"] for r in records])
    alpha_TK = np.array([r["alpha"] for r in records], dtype=np.float64)
    if alpha_TK.ndim != 2:
        raise ToolError(f"{args.metrics}: the {args.kind!r} records' alpha lists differ in length")
    k = alpha_TK.shape[1]
    names = run_domain_names(os.path.dirname(os.path.abspath(args.metrics)), k) or _indices(k)
    dashed_TK, dashed_note = None, ""
    if args.kind == "dro":
        dashed_TK = np.cumsum(alpha_TK, axis=0) / np.arange(1, len(steps) + 1)[:, None]
        dashed_note = "dashed: running mean α*"
    elif args.kind == "dga" and all("alpha_ema" in r for r in records):
        dashed_TK = np.array([r["alpha_ema"] for r in records], dtype=np.float64)
        dashed_note = "dashed: α_EMA"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 5.5))
    draw = "steps-post" if args.kind == "mixture" else "default"
    for i, color in enumerate(domain_colors(plt, k)):
        ax.plot(steps, alpha_TK[:, i], color=color, lw=1.2, drawstyle=draw, label=names[i])
        if dashed_TK is not None:
            ax.plot(steps, dashed_TK[:, i], color=color, lw=1.0, ls="--")
    ax.axhline(1.0 / k, color="black", lw=0.6, ls=":", label="uniform 1/k")
    ax.set_xlabel("step")
    ax.set_ylabel("domain weight α")
    run = os.path.basename(os.path.dirname(os.path.abspath(args.metrics)))
    ax.set_title(f"{run}: {args.kind} weights per domain" +
                 (f" ({dashed_note})" if dashed_note else ""), fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    save_png(fig, args.out)
    plt.close(fig)


# --------------------------------------------------------------------------- losses


def _eval_curves(run_dir: str) -> dict:
    records = _metrics_records(os.path.join(run_dir, METRICS_NAME), "eval")
    losses = [[math.nan if v is None else v for v in r["domain_loss"]] for r in records]
    if len({len(row) for row in losses}) != 1:
        raise ToolError(f"{run_dir}: eval records disagree on the number of domains")
    return {"steps": np.array([r["step"] for r in records]),
            "domain_TK": np.array(losses, dtype=np.float64),
            "avg": np.array([math.nan if r["avg"] is None else r["avg"] for r in records]),
            "worst": np.array([math.nan if r["worst"] is None else r["worst"]
                               for r in records])}


def cmd_losses(args: argparse.Namespace) -> None:
    curves = [_eval_curves(run) for run in args.runs]
    k = curves[0]["domain_TK"].shape[1]
    for run, c in zip(args.runs, curves):
        if c["domain_TK"].shape[1] != k:
            raise ToolError(f"{run} was evaluated on {c['domain_TK'].shape[1]} domains, "
                            f"{args.runs[0]} on {k}")
    names = None
    for run in args.runs:
        these = run_domain_names(run, k)
        if these is not None and names is not None and these != names:
            raise ToolError(f"{run} was evaluated on other domains than the runs before it")
        names = names or these
    names = names or _indices(k)
    titles = names + ["average", "worst case"]
    ncols = math.ceil(math.sqrt(len(titles)))
    nrows = math.ceil(len(titles) / ncols)
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for j, (run, c) in enumerate(zip(args.runs, curves)):
        label = os.path.basename(os.path.normpath(run))
        series = [c["domain_TK"][:, i] for i in range(k)] + [c["avg"], c["worst"]]
        for ax, values in zip(axes.flat, series):
            ax.plot(c["steps"], values, color=colors(j % 10), lw=1.2, marker=".", label=label)
    for ax, title in zip(axes.flat, titles):
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(titles):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=9,
               frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.supxlabel("step", fontsize=9)
    fig.supylabel("validation loss (token mean)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save_png(fig, args.out)
    plt.close(fig)


# --------------------------------------------------------------------------- hierarchy


def cmd_hierarchy(args: argparse.Namespace) -> None:
    try:
        spec = load_mixture(args.mixture)
    except MixtureFileError as exc:
        raise ToolError(str(exc)) from None
    if spec.kind != HIERARCHICAL_KIND:
        raise ToolError(f"{args.mixture}: hierarchy plots a {HIERARCHICAL_KIND} mixture file, "
                        f"not kind {spec.kind!r}")
    groups = spec.groups
    group_mean, group_var = spec.group_moments()
    mean, var = spec.mean(), spec.var()
    order = np.argsort(groups.group_of, kind="stable")  # domains in blocks by group
    plt = _pyplot()
    colors = domain_colors(plt, groups.num_groups)
    fig, (left, right) = plt.subplots(1, 2, figsize=(4 + 0.5 * groups.num_domains, 5),
                                      gridspec_kw={"width_ratios": [
                                          max(groups.num_groups, 2), max(groups.num_domains, 2)]})
    x = np.arange(groups.num_groups)
    left.bar(x, group_mean, yerr=np.sqrt(group_var), color=colors, capsize=3)
    left.axhline(1.0 / groups.num_groups, color="black", lw=0.6, ls=":", label="uniform 1/G")
    left.set_xticks(x, groups.names, rotation=45, ha="right", fontsize=8)
    left.set_ylabel("weight")
    left.set_title(f"group weights w ~ Dir(γ)\nΣγ = {spec.group_concentration.sum():.3g}",
                   fontsize=10)
    x = np.arange(groups.num_domains)
    right.bar(x, mean[order], yerr=np.sqrt(var[order]), capsize=3,
              color=[colors[g] for g in groups.group_of[order]])
    right.axhline(1.0 / groups.num_domains, color="black", lw=0.6, ls=":", label="uniform 1/k")
    right.set_xticks(x, [groups.domains[i] for i in order], rotation=45, ha="right", fontsize=8)
    right.set_title("domain weights α_i = w_g · v_i\n(coloured by group)", fontsize=10)
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(f"{os.path.basename(args.mixture)}: E ± sd (exact moments)", fontsize=10)
    fig.tight_layout()
    save_png(fig, args.out)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simplex", help="prior vs a Dirichlet mixture file on a 2-D simplex")
    s.add_argument("--mixture", required=True, help="a Dirichlet mixture file (draw-mixture/v1)")
    s.add_argument("--domains", required=True, nargs=3, metavar="NAME",
                   help="the three domains to project onto")
    s.add_argument("--samples", type=int, default=2000, help="draws per panel (default 2000)")
    s.add_argument("--width", type=float,
                   help="n of the prior Dir((√n/k)·1) (default: the file's provenance n2)")
    s.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    s.add_argument("--out", required=True, help="PNG to write")
    s.set_defaults(func=cmd_simplex)
    a = sub.add_parser("alpha", help="α trajectory per domain from a run's metrics.jsonl")
    a.add_argument("--metrics", required=True, help="RUN/metrics.jsonl")
    a.add_argument("--kind", required=True, choices=["dro", "mixture", "dga"],
                   help="which records' alpha to plot")
    a.add_argument("--out", required=True, help="PNG to write")
    a.set_defaults(func=cmd_alpha)
    lo = sub.add_parser("losses", help="per-domain validation loss curves across runs")
    lo.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    lo.add_argument("--out", required=True, help="PNG to write")
    lo.set_defaults(func=cmd_losses)
    h = sub.add_parser("hierarchy", help="both levels of a hierarchical Dirichlet mixture file")
    h.add_argument("mixture", metavar="FILE", help="a hierarchical_dirichlet mixture file")
    h.add_argument("--out", required=True, help="PNG to write")
    h.set_defaults(func=cmd_hierarchy)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ToolError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
