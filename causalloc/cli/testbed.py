"""``causalloc testbed build|export|import``: build (or reuse) the controlled injection testbed,
and move a built one between machines as one checked file (:mod:`causalloc.testbed_file`)."""

from __future__ import annotations

import argparse
import json

EPILOG = """examples:
  causalloc testbed build                        # tiny default (generated authors)
  causalloc testbed build --json                 # one JSON object with the diagnostics
  causalloc testbed build --kind tofu --tofu-path "$CAUSALLOC_TOFU_DIR" --authors 20
  causalloc testbed build --kind smollm2 --cache-dir /scratch/causalloc
  causalloc testbed build --set inject_steps=800 --set budget=0.05

  # any Hugging Face causal LM (LLaMA, Mistral, Qwen2, OLMo2, GPT-NeoX, GPT-2 families):
  # a hub id (downloaded by transformers) or a local directory with its tokenizer
  causalloc testbed build --kind hf --model meta-llama/Llama-3.1-8B-Instruct \\
      --tofu-path "$CAUSALLOC_TOFU_DIR" --dtype bfloat16 --device cuda \\
      --batch-size 4 --grad-accum 4 --gradient-checkpointing
  causalloc testbed build --kind hf --model ./models/olmo2-7b --data generated --dtype bfloat16
  causalloc testbed build --kind tiny --dtype bfloat16 --device cpu --json
  causalloc testbed build --set injection=free   # the old, unconstrained injection (norm artefact)

  # pin a testbed: one file with theta_o, theta_r, V_tgt, tokenizer, data and record
  causalloc testbed export ca213c09 --out small.testbed.tgz   # hash or theta_o fingerprint prefix
  causalloc testbed import small.testbed.tgz                  # checked against its fingerprint
  # a spec then names the file: [testbed] file = "small.testbed.tgz" (relative to the spec)
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
    build.add_argument("--kind", default="tiny", help="tiny | tofu | smollm2 | hf (default: tiny)")
    build.add_argument("--model", metavar="ID_OR_DIR",
                       help="kind hf: a hub model id (needs the network) or a local model "
                            "directory")
    build.add_argument("--tofu-path",
                       help="directory of the TOFU files (kinds tofu, smollm2 and hf; kind tiny refuses it)")
    build.add_argument("--data", choices=("generated", "tofu"),
                       help="kind hf: generated authors or TOFU (default: tofu when "
                            "--tofu-path is given)")
    build.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: float32)")
    build.add_argument("--device",
                       help="auto | cpu | cuda | cuda:N (default: auto = CUDA when present)")
    build.add_argument("--batch-size", type=int, metavar="B",
                       help="micro-batch of the retain fine-tuning and the injection")
    build.add_argument("--grad-accum", type=int, metavar="K",
                       help="micro-batches per optimizer step (default 1)")
    build.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute activations in the backward pass (less memory, more time)")
    build.add_argument("--max-length", type=int, metavar="T", help="tokens per example")
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

    export = actions.add_parser(
        "export", help="write a built or imported testbed to one file (pinned testbed)",
        description="Write the testbed whose config hash or theta_o fingerprint starts with KEY to "
                    "FILE (gzip tar: weights as safetensors, V_tgt, tokenizer, data, record, and a "
                    "manifest of sha256 checksums). A rebuild on another processor gives another "
                    "instance; this file lets others rerun on exactly these weights.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("key", metavar="HASH_OR_FINGERPRINT", help="at least 8 hex digits")
    export.add_argument("--out", required=True, metavar="FILE", help="the testbed file to write (never overwritten)")
    export.add_argument("--cache-dir", help="testbed cache (default $CAUSALLOC_CACHE/testbeds)")
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(func=run_export)

    imp = actions.add_parser(
        "import", help="import a testbed file (checked) into the cache",
        description="Check a testbed file (manifest checksums, member names, theta_o fingerprint) and "
                    "unpack it into $CAUSALLOC_CACHE/testbeds/pinned/<fingerprint>. A foreign or damaged "
                    "file is refused with the reason; nothing is left behind.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--cache-dir", help="testbed cache (default $CAUSALLOC_CACHE/testbeds)")
    imp.add_argument("--json", action="store_true", help="print one JSON object")
    imp.set_defaults(func=run_import)


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


def testbed_from_args(args, say):
    """``(config, testbed)`` named by the ``--testbed``, ``--set``, ``--tofu-path`` and
    ``--cache-dir`` options of a command that works on a testbed (built or reused)."""
    from causalloc.testbed import build_testbed, config_for

    overrides = parse_overrides(args.set)
    if args.tofu_path is not None:
        overrides["tofu_path"] = args.tofu_path
    config = config_for(args.testbed, **overrides)
    say(f"testbed {config.kind} {config.hash()[:16]}: building or loading")
    return config, build_testbed(config, cache_dir=args.cache_dir, progress=not args.no_progress)


def run_build(args) -> int:
    from causalloc.errors import SpecError
    from causalloc.testbed import build_testbed, config_for

    if args.data == "tofu" and not args.tofu_path:
        raise SpecError("--data tofu: needs --tofu-path DIR")
    if args.data == "generated" and args.tofu_path:
        raise SpecError("--data generated: drop --tofu-path (or use --data tofu)")
    overrides = parse_overrides(args.set)
    batch = {"retain_batch": args.batch_size, "inject_batch": args.batch_size}
    for key, value in (("tofu_path", args.tofu_path), ("n_authors", args.authors),
                       ("n_forget_authors", args.forget_authors), ("budget", args.budget),
                       ("target_seed", args.seed), ("model", args.model), ("dtype", args.dtype),
                       ("device", args.device), ("grad_accum", args.grad_accum),
                       ("gradient_checkpointing", args.gradient_checkpointing or None),
                       ("max_length", args.max_length), *batch.items()):
        if value is not None:
            overrides[key] = value
    config = config_for(args.kind, **overrides)
    testbed = build_testbed(config, cache_dir=args.cache_dir, progress=not args.json, rebuild=args.rebuild)
    report = {**testbed.diagnostics, "path": str(testbed.path), "hash": config.hash(),
              "kind": config.kind, "model": config.model, "dtype": config.dtype,
              "injection": config.injection}
    if args.json:
        print(json.dumps(report))
    else:
        d = testbed.diagnostics
        model = f" ({config.model})" if config.model else ""
        print(f"testbed {config.kind}{model} in {config.dtype} at {testbed.path}")
        print(f"  theta_r: ES forget {d['es_forget_theta_r']:.3f}  ES retain {d['es_retain_theta_r']:.3f}")
        print(f"  theta_o: ES forget {d['es_forget_theta_o']:.3f}  ES retain {d['es_retain_theta_o']:.3f}")
        print(f"  V_tgt: {d['n_target_units']} of {d['total_units']} value vectors (budget {d['budget']}); "
              f"built in {d['seconds']:.1f} s")
        print(f"  {config.injection} injection: V_tgt / rest norm ratio {d['norm_ratio_vtgt']:.2f}, "
              f"weight-norm precision {d['weight_norm_precision']:.3f} (chance {d['budget']})")
    return 0


def run_export(args) -> int:
    from causalloc.testbed_file import export_testbed, find_testbed

    folder = find_testbed(args.key, args.cache_dir)
    manifest = export_testbed(folder, args.out)
    size = sum(entry["size"] for entry in manifest["files"].values())
    report = {"file": str(args.out), "hash": manifest["hash"], "kind": manifest["kind"],
              "theta_o_fingerprint": manifest["theta_o_fingerprint"], "files": len(manifest["files"]),
              "unpacked_bytes": size}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"testbed {manifest['hash'][:16]} ({manifest['kind']}, theta_o {manifest['theta_o_fingerprint'][:16]}) "
              f"-> {args.out}: {len(manifest['files'])} files, {size / 1e6:.1f} MB unpacked")
    return 0


def run_import(args) -> int:
    from causalloc.testbed_file import import_testbed

    testbed = import_testbed(args.file, args.cache_dir)
    record = {"path": str(testbed.path), "hash": testbed.config.hash(), "kind": testbed.config.kind,
              "theta_o_fingerprint": testbed.theta_o_fingerprint}
    if args.json:
        print(json.dumps(record))
    else:
        print(f"imported {args.file}: testbed {record['hash'][:16]} ({record['kind']}), theta_o "
              f"{record['theta_o_fingerprint'][:16]} at {testbed.path}")
    return 0
