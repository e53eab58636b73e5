"""``causalloc testbed build``: build (or reuse) the controlled injection testbed."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  causalloc testbed build                        # tiny default (generated authors)
  causalloc testbed build --json                 # one JSON object with the diagnostics
  causalloc testbed build --kind tofu --tofu-path ../shared/data/tofu --authors 20
  causalloc testbed build --kind smollm2 --cache-dir /scratch/causalloc
  causalloc testbed build --set inject_steps=800 --set budget=0.05
  causalloc testbed build --set injection=free   # the old, unconstrained injection (norm artefact)
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "testbed", help="build or inspect the controlled injection testbed",
        description="theta_p -> theta_r (retain fine-tuning) -> theta_o (forget knowledge injected "
                    "into a random V_tgt of value vectors), cached under a hash of its config.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="build (or reuse) a testbed and print its diagnostics",
                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--kind", default="tiny", help="tiny | tofu | smollm2 (default: tiny)")
    build.add_argument("--tofu-path", help="directory of the TOFU files (kind tofu)")
    build.add_argument("--authors", type=int, help="number of authors (default 20)")
    build.add_argument("--forget-authors", type=int, help="number of forget authors (default 2)")
    build.add_argument("--budget", type=float, help="fraction of value vectors in V_tgt (default 0.1)")
    build.add_argument("--seed", type=int, help="seed of V_tgt and of the injection data order")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override any TestbedConfig field (repeatable)")
    build.add_argument("--cache-dir", help="where testbeds are cached (default $CAUSALLOC_CACHE/testbeds "
                                           "or ~/.cache/causalloc/testbeds)")
    build.add_argument("--rebuild", action="store_true", help="rebuild even when a cached copy exists")
    build.add_argument("--json", action="store_true", help="print one JSON object")
    build.set_defaults(func=run_build)


def parse_overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings -> dict, VALUE parsed as JSON when it parses, else a string."""
    from causalloc.errors import SpecError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_build(args) -> int:
    from causalloc.testbed import build_testbed, config_for

    overrides = parse_overrides(args.set)
    for key, value in (("tofu_path", args.tofu_path), ("n_authors", args.authors),
                       ("n_forget_authors", args.forget_authors), ("budget", args.budget),
                       ("target_seed", args.seed)):
        if value is not None:
            overrides[key] = value
    config = config_for(args.kind, **overrides)
    testbed = build_testbed(config, cache_dir=args.cache_dir, progress=not args.json, rebuild=args.rebuild)
    report = {**testbed.diagnostics, "path": str(testbed.path), "hash": config.hash(), "kind": config.kind,
              "injection": config.injection}
    if args.json:
        print(json.dumps(report))
    else:
        d = testbed.diagnostics
        print(f"testbed {config.kind} at {testbed.path}")
        print(f"  theta_r: ES forget {d['es_forget_theta_r']:.3f}  ES retain {d['es_retain_theta_r']:.3f}")
        print(f"  theta_o: ES forget {d['es_forget_theta_o']:.3f}  ES retain {d['es_retain_theta_o']:.3f}")
        print(f"  V_tgt: {d['n_target_units']} of {d['total_units']} value vectors (budget {d['budget']}); "
              f"built in {d['seconds']:.1f} s")
        print(f"  {config.injection} injection: V_tgt / rest norm ratio {d['norm_ratio_vtgt']:.2f}, "
              f"weight-norm precision {d['weight_norm_precision']:.3f} (chance {d['budget']})")
    return 0
