#!/usr/bin/env python3
"""DRAW's Bayesian transfer: from the proxy's DRO weights α* to the main run's Dirichlet.

    β1 = (√n1/k)·1,  β1_new = β1 + s·α*,  β2 = √(n2/n1)·β1_new      (docs/algorithms.md §1)

n1 and n2 are the proxy's and the main model's d_model, read from MODEL_YAML: a file of
configs/models/ or a run's resolved config.yaml (its `model` section). α* is a static
mixture file (docs/architecture.md, Contract 2), e.g. the proxy DRO run's alpha_star.json
(or a DGA run's dga_alpha_star.json: alignment evidence).

Writes --out, the main run's mixture file (kind dirichlet, concentration β2, stats mean/var,
provenance), and with --static-out the static proxy-informed baseline: the fixed weights
E[α] under Dir(β2) (docs/algorithms.md §1.8). Prints a table of α*, E[α] and sd per domain.

With the default evidence s = 1 the main mixture stays near uniform by design (docs/algorithms.md §1
item 7): the prior carries √n1 pseudo-counts and α* one. --evidence gives α* more weight.

With --groups FILE (draw-groups/v1: group name → domains) the prior is hierarchical: group
weights w ~ Dir(γ), each group's split v_g ~ Dir(β_g), α_i = w_g·v_i; --out then holds both
levels' posterior (kind hierarchical_dirichlet, draw_megatron/mixture/hierarchical.py) and
the table adds the group level. E[α] and Var[α] are exact; the 5 %/95 % quantiles are Monte
Carlo (--mc-draws, --mc-seed), and the output says so.

Example:
  python tools/draw_posterior.py --alpha-star runs/proxy_dro/alpha_star.json \\
      --proxy-config configs/models/70M.yaml --main-config configs/models/1B.yaml \\
      --data data/pile --out mixtures/draw_1B.json --static-out mixtures/static_1B.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace

from draw_megatron.config.base import ConfigError, load_yaml
from draw_megatron.config.model import PRESETS, ModelConfig
from draw_megatron.data.manifest import Manifest, ManifestError
from draw_megatron.mixture.draw import DrawPosterior, draw_posterior
from draw_megatron.mixture.files import MixtureFileError, MixtureSpec, load_mixture
from draw_megatron.mixture.hierarchical import (AlphaSummary, HierarchicalPosterior,
                                                hierarchical_posterior, load_groups)


class ToolError(Exception):
    """A problem with the inputs, reported as one line on stderr (exit status 1)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alpha-star", required=True, metavar="FILE",
                   help="the proxy's α*: a static mixture file (draw-mixture/v1)")
    p.add_argument("--proxy-config", required=True, metavar="MODEL_YAML",
                   help="proxy model: configs/models/<name>.yaml or a run's config.yaml")
    p.add_argument("--main-config", required=True, metavar="MODEL_YAML",
                   help="main model: configs/models/<name>.yaml or a run's config.yaml")
    p.add_argument("--main-width", type=int, metavar="N",
                   help="the main model's d_model n2, when it differs from --main-config's "
                        "(e.g. a run's model.d_model override; tools/run_pipeline.py passes it)")
    p.add_argument("--evidence", type=float, default=None, metavar="s",
                   help="pseudo-counts given to α* in the posterior (default: mixture.evidence "
                        "of --main-config when it is a run config, else 1, the paper's)")
    p.add_argument("--data", metavar="ROOT",
                   help="data root: check α*'s domains against its manifest.json and write "
                        "the outputs in manifest order")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the main run's Dirichlet mixture file (kind dirichlet; with --groups "
                        "hierarchical_dirichlet)")
    p.add_argument("--static-out", metavar="FILE",
                   help="also write the static proxy-informed baseline, E[α] under Dir(β2)")
    p.add_argument("--groups", metavar="FILE",
                   help="a groups file (draw-groups/v1): write the hierarchical posterior")
    p.add_argument("--mc-draws", type=int, default=10_000, metavar="N",
                   help="with --groups: Monte Carlo draws behind the quantiles (default 10000)")
    p.add_argument("--mc-seed", type=int, default=0,
                   help="with --groups: seed of those draws (default 0)")
    return p


def model_width(path: str) -> int:
    """d_model of a model YAML, or of the `model` section of a run's config.yaml."""
    try:
        raw = load_yaml(path)
    except ConfigError as exc:
        raise ToolError(str(exc)) from None
    section = raw
    if isinstance(raw.get("model"), dict):  # a run's config.yaml
        section = raw["model"]
    elif "run" in raw or "data" in raw:
        raise ToolError(f"{path}: a run config without a `model` section: no model width")
    if "d_model" not in section and section.get("preset") not in PRESETS:
        hint = (f"its preset {section['preset']!r} is not one of {', '.join(PRESETS)}"
                if section.get("preset") is not None else "it has no preset either")
        raise ToolError(f"{path}: no model width: set model.d_model (or a model.preset that "
                        f"gives it); {hint}")
    try:
        return ModelConfig.from_dict(section, prefix="model").d_model
    except ConfigError as exc:
        raise ToolError(f"{path}: {exc}") from None


def config_evidence(path: str) -> float:
    """mixture.evidence of a run config (1, the paper's s, for a model YAML or when unset)."""
    try:
        raw = load_yaml(path)
    except ConfigError as exc:
        raise ToolError(str(exc)) from None
    mixture = raw.get("mixture") if isinstance(raw.get("mixture"), dict) else {}
    return float(mixture.get("evidence", 1.0))


def read_alpha_star(path: str, data_root: str | None) -> MixtureSpec:
    names = None
    if data_root is not None:
        try:
            names = Manifest.load(data_root).domain_names
        except ManifestError as exc:
            raise ToolError(str(exc)) from None
    try:
        spec = load_mixture(path, names)
    except MixtureFileError as exc:
        raise ToolError(str(exc)) from None
    if spec.kind != "static":
        raise ToolError(f"{path}: α* must be a static mixture file (weights on the simplex), "
                        f"not kind {spec.kind!r}")
    return spec


def _where(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def _inputs(args: argparse.Namespace, alpha_spec: MixtureSpec) -> dict:
    """The provenance entries naming the tool's inputs."""
    return {"alpha_star_file": _where(args.alpha_star),
            "proxy_config": _where(args.proxy_config),
            "main_config": _where(args.main_config),
            "data_root": _where(args.data),
            "source_run": alpha_spec.provenance}


def provenance(post: DrawPosterior, widths: tuple[int, int], args: argparse.Namespace,
               alpha_spec: MixtureSpec) -> dict:
    return {
        "method": "DRAW posterior: beta2 = sqrt(n2/n1) * (sqrt(n1)/k * 1 + s * alpha_star) "
                  "(docs/algorithms.md §1)",
        "tool": "tools/draw_posterior.py",
        "prior": post.prior.tolist(),
        "posterior": post.posterior.tolist(),
        "alpha_star": post.alpha_star.tolist(),
        "n1": widths[0], "n2": widths[1], "k": post.num_domains, "evidence": post.evidence,
        **_inputs(args, alpha_spec),
    }


def hierarchical_provenance(post: HierarchicalPosterior, widths: tuple[int, int],
                            args: argparse.Namespace, alpha_spec: MixtureSpec) -> dict:
    def levels(spec) -> dict:
        return {"group_concentration": spec.group_concentration.tolist(),
                "concentration": spec.concentration.tolist()}

    return {
        "method": "hierarchical DRAW posterior: gamma2 = sqrt(n2/n1) * (sqrt(n1)/G + s * A), "
                  "beta_g2 = sqrt(n2/n1) * (sqrt(n1)/|g| + s * alpha_star_g / A_g), "
                  "A_g = sum of alpha_star over group g (docs/algorithms.md section 7)",
        "tool": "tools/draw_posterior.py",
        "groups_file": _where(args.groups),
        "prior": levels(post.prior),
        "posterior": levels(post.posterior),
        "alpha_star": post.alpha_star.tolist(),
        "group_mass": post.group_mass.tolist(),
        "n1": widths[0], "n2": widths[1], "k": post.prior.num_domains,
        "num_groups": post.prior.groups.num_groups, "evidence": post.evidence,
        **_inputs(args, alpha_spec),
    }


def summary(names: list[str], post: DrawPosterior) -> list[str]:
    width = max(len("domain"), *(len(n) for n in names)) + 2
    lines = [f"DRAW posterior: k={post.num_domains}, n1={post.n1:g}, n2={post.n2:g}, "
             f"s={post.evidence:g}, Σβ2={post.main.sum():.4f}",
             f"{'domain':<{width}}{'α*':>10}{'β2':>10}{'E[α]':>10}{'sd':>10}"]
    for name, a, b, m, v in zip(names, post.alpha_star, post.main, post.mean, post.var):
        lines.append(f"{name:<{width}}{a:>10.4f}{b:>10.4f}{m:>10.4f}{math.sqrt(v):>10.4f}")
    return lines


def evidence_note(post: DrawPosterior) -> list[str]:
    """docs/algorithms.md §1.7: how near uniform E[α] must stay, whatever α* is."""
    k, root_n1, s = post.num_domains, math.sqrt(post.n1), post.evidence
    low, high = (root_n1 / k) / (root_n1 + s), (root_n1 / k + s) / (root_n1 + s)
    return [f"note (docs/algorithms.md §1.7): with s = 1 the prior carries √n1 = {root_n1:.4g} "
            "pseudo-counts and α* one,",
            f"  so every E[α_i] lies in [{low:.4f}, {high:.4f}] around 1/k = {1 / k:.4f} "
            "whatever α* is: the mixture stays near uniform by design.",
            "  --evidence s gives α* more weight (E[α_i] = (√n1/k + s·α_i*)/(√n1 + s))."]


def hierarchical_summary(post: HierarchicalPosterior, stats: AlphaSummary) -> list[str]:
    """Both levels' concentrations, the exact moments and the Monte Carlo quantiles."""
    main, groups = post.main, post.main.groups
    gw = max(len("group"), *(len(n) for n in groups.names)) + 2
    dw = max(len("domain"), *(len(n) for n in groups.domains)) + 2
    lo, hi = (f"{100 * q:g}%" for q in stats.quantile_probs)
    lines = [f"hierarchical DRAW posterior: k={groups.num_domains}, G={groups.num_groups}, "
             f"n1={post.n1:g}, n2={post.n2:g}, s={post.evidence:g}, "
             f"Σγ2={main.group_concentration.sum():.4f}",
             "group level (E[w], sd exact):",
             f"{'group':<{gw}}{'A_g':>10}{'γ2':>10}{'E[w]':>10}{'sd':>10}"]
    for g, name in enumerate(groups.names):
        lines.append(f"{name:<{gw}}{post.group_mass[g]:>10.4f}"
                     f"{main.group_concentration[g]:>10.4f}{stats.group_mean[g]:>10.4f}"
                     f"{math.sqrt(stats.group_var[g]):>10.4f}")
    lines += [f"domain level (E[α], sd exact; {lo} and {hi}: {stats.method['quantiles']}):",
              f"{'domain':<{dw}}{'group':<{gw}}{'α*':>10}{'β2':>10}{'E[α]':>10}{'sd':>10}"
              f"{lo:>10}{hi:>10}"]
    for i, name in enumerate(groups.domains):
        lines.append(f"{name:<{dw}}{groups.names[groups.group_of[i]]:<{gw}}"
                     f"{post.alpha_star[i]:>10.4f}{main.concentration[i]:>10.4f}"
                     f"{stats.mean[i]:>10.4f}{math.sqrt(stats.var[i]):>10.4f}"
                     f"{stats.quantiles[0, i]:>10.4f}{stats.quantiles[1, i]:>10.4f}")
    return lines


def run_hierarchical(args: argparse.Namespace, widths: tuple[int, int],
                     alpha_spec: MixtureSpec) -> None:
    names = list(alpha_spec.domains)
    groups = load_groups(args.groups, names)
    post = hierarchical_posterior(alpha_spec.values, groups, *widths, args.evidence)
    stats = post.main.summary(num_draws=args.mc_draws, seed=args.mc_seed)
    prov = hierarchical_provenance(post, widths, args, alpha_spec)
    main = post.main
    replace(main, stats={"mean": stats.mean.tolist(), "var": stats.var.tolist()},
            provenance=prov).save(args.out)
    if args.static_out:
        static_prov = {**prov, "baseline": "static proxy-informed: fixed E[alpha] under the "
                       "hierarchical Dirichlet (docs/algorithms.md section 7)",
                       "group_concentration": main.group_concentration.tolist(),
                       "concentration": main.concentration.tolist()}
        MixtureSpec("static", names, stats.mean / stats.mean.sum(), {}, static_prov) \
            .save(args.static_out)
    print("\n".join(hierarchical_summary(post, stats)))


def run(args: argparse.Namespace) -> None:
    if args.evidence is None:
        args.evidence = config_evidence(args.main_config)
    if not (math.isfinite(args.evidence) and args.evidence > 0):
        raise ToolError(f"--evidence {args.evidence} must be finite and > 0")
    if args.main_width is not None and args.main_width < 1:
        raise ToolError(f"--main-width {args.main_width} must be >= 1")
    if args.mc_draws < 1:
        raise ToolError(f"--mc-draws {args.mc_draws} must be >= 1")
    n1 = model_width(args.proxy_config)
    n2 = args.main_width or model_width(args.main_config)
    if n1 > n2:
        print(f"warning: the proxy (d_model n1={n1}, {args.proxy_config}) is wider than the main "
              f"model (n2={n2}, {args.main_config}); √(n2/n1) < 1 lowers the concentration, "
              "so the main run's draws spread further from the mean", file=sys.stderr)
    alpha_spec = read_alpha_star(args.alpha_star, args.data)
    if args.groups:
        run_hierarchical(args, (n1, n2), alpha_spec)
        print(f"wrote {args.out}" + (f" and {args.static_out}" if args.static_out else ""))
        return
    post = draw_posterior(alpha_spec.values, n1, n2, args.evidence)
    names = list(alpha_spec.domains)
    prov = provenance(post, (n1, n2), args, alpha_spec)
    stats = {"mean": post.mean.tolist(), "var": post.var.tolist()}
    MixtureSpec("dirichlet", names, post.main, stats, prov).save(args.out)
    if args.static_out:
        static_prov = {**prov, "baseline": "static proxy-informed: fixed E[alpha] under "
                       "Dir(beta2) (docs/algorithms.md §1.8)", "concentration": post.main.tolist()}
        MixtureSpec("static", names, post.mean / post.mean.sum(), {}, static_prov) \
            .save(args.static_out)
    print("\n".join(summary(names, post)))
    if post.evidence == 1.0:
        print("\n".join(evidence_note(post)))
    print(f"wrote {args.out}" + (f" and {args.static_out}" if args.static_out else ""))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ToolError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
