"""`saekit train`: train one or more SAEs on cached (or on-the-fly) activations.

    saekit train --cache runs/demo/acts --out runs/demo/sae --arch topk --k 32 --d-sae 4608 --tokens 2000000
    saekit train --config my_run.yaml --set lr=2e-4 --set saes.0.k=64
    torchrun --nproc_per_node 2 -m app.cli train --config my_run.yaml      # data-parallel

Precedence: defaults < --config file < shortcut flags < --set overrides. Shortcut flags that
describe an SAE (--arch, --k, --d-sae, --hook, --option, ...) apply to every SAE in the config. With
--cache, the config is resolved against the cache as `sae.train` resolves it
(`sae.resolve_train_config`): an SAE's hook and d_in default to the cache's (the hook when it
holds one) unless a flag, the file's `saes` entry or --set chose them, and a chosen d_in must
match. The full config is saved as <out>/train_config.json.
"""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train sparse autoencoders on cached activations"

# flag dest -> (TrainConfig key or "saes.*.<key>")
_TRAIN_FLAGS = {
    "cache": "cache_dir",
    "out": "out_dir",
    "tokens": "n_tokens",
    "lr": "lr",
    "batch_size": "store.batch_size",
    "device": "device",
    "wandb_project": "wandb_project",
    "wandb_mode": "wandb_mode",
    "run_name": "run_name",
    "seed": "seed",
}
_SAE_FLAGS = {
    "arch": "architecture",
    "k": "k",
    "d_sae": "d_sae",
    "d_in": "d_in",
    "hook": "hook_name",
    "l1_coefficient": "l1_coefficient",
    "l0_coefficient": "l0_coefficient",
    "target_l0": "target_l0",
}


class _Names:
    """Architecture names from the registry, looked up only when help is shown: the registry
    imports torch, which every other `saekit` invocation should not wait for."""

    def __init__(self, uses: str | None = None, sep: str = " / ") -> None:
        self.uses, self.sep = uses, sep

    def __str__(self) -> str:
        import sae

        return self.sep.join(sae.architecture_names(self.uses))


def _add(p: argparse.ArgumentParser, *flags: str, names: _Names, **kw) -> None:
    """add_argument whose help may say %(names)s: the architectures the flag applies to."""
    p.add_argument(*flags, **kw).names = names  # argparse fills %(...)s from the action's attributes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML/JSON TrainConfig file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable (e.g. --set lr=2e-4 --set saes.0.k=64)")
    p.add_argument("--cache", default=None, help="activation cache folder (from `saekit cache`); omit to run the model on the fly")
    p.add_argument("--out", default=None, help="output folder (default runs/sae)")
    _add(p, "--arch", default=None, help="%(names)s", names=_Names(sep=" | "))
    _add(p, "--k", type=int, default=None, help="active latents per token (%(names)s)", names=_Names("k"))
    p.add_argument("--d-sae", dest="d_sae", type=int, default=None, help="number of latents")
    p.add_argument("--d-in", dest="d_in", type=int, default=None, help="input width (default: the cache's)")
    p.add_argument("--hook", default=None, help="hook name (default: the cache's, if it holds one)")
    _add(p, "--l1-coefficient", dest="l1_coefficient", type=float, default=None, help="%(names)s sparsity weight",
         names=_Names("l1_coefficient"))
    _add(p, "--l0-coefficient", dest="l0_coefficient", type=float, default=None, help="%(names)s sparsity weight",
         names=_Names("l0_coefficient"))
    _add(p, "--target-l0", dest="target_l0", type=float, default=None, help="%(names)s: aim for this L0",
         names=_Names("target_l0"))
    _add(p, "--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
         help="an architecture's own setting, repeatable (%(names)s; e.g. --option group_sizes=[288,288,576,1152,2304])",
         names=_Names("options"))
    p.add_argument("--tokens", type=int, default=None, help="training tokens (default 2,000,000)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="tokens per step (default 4096)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:1 | mps (default: best available)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights); for GPUs")
    p.add_argument("--dense-decoder", action="store_true", help="disable the sparse TopK decoder (for comparison)")
    p.add_argument("--wandb-project", dest="wandb_project", default=None, help="log to wandb under this project")
    p.add_argument("--wandb-mode", dest="wandb_mode", default=None, choices=["online", "offline", "disabled"])
    p.add_argument("--run-name", dest="run_name", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-resume", action="store_true", help="start over even if <out>/checkpoints exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_config(args: argparse.Namespace):  # -> sae.TrainConfig
    """The TrainConfig these arguments describe, resolved against --cache (also used by tests)."""
    import sae

    base = sae.load_config(sae.TrainConfig, args.config)
    n_saes = len(base.saes)
    overrides: list[str] = []
    for dest, key in _TRAIN_FLAGS.items():
        if getattr(args, dest, None) is not None:
            overrides.append(f"{key}={getattr(args, dest)}")
    for dest, key in _SAE_FLAGS.items():
        if getattr(args, dest, None) is not None:
            overrides += [f"saes.{i}.{key}={getattr(args, dest)}" for i in range(n_saes)]
    for item in getattr(args, "options", None) or []:
        if "=" not in item:
            raise sae.ConfigError(f"--option {item!r} must look like KEY=VALUE (e.g. --option group_sizes=[1152,3456])")
        overrides += [f"saes.{i}.options.{item}" for i in range(n_saes)]
    if args.bf16:
        overrides.append("autocast_dtype=bfloat16")
    if args.dense_decoder:
        overrides.append("sparse_decoder=false")
    if args.no_resume:
        overrides.append("resume=false")
    if args.no_progress:
        overrides.append("progress=false")
    explicit = overrides + list(args.overrides)
    cfg = sae.load_config(sae.TrainConfig, args.config, explicit)
    if cfg.cache_dir:
        chosen = _chosen_sae_keys(args.config, explicit, len(cfg.saes))
        cfg = sae.resolve_train_config(cfg, sae.CacheManifest.read(cfg.cache_dir), chosen)
    return cfg


def _chosen_sae_keys(path: str | None, overrides: list[str], n_saes: int) -> list[set[str]]:
    """The SAEConfig fields the user set for each SAE: in the config file's `saes` entries, or by a
    `saes.N.key=` override (the shortcut flags become those). The rest may come from the cache."""
    import yaml

    chosen: list[set[str]] = [set() for _ in range(n_saes)]

    def add_all(entries: object) -> None:
        for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            if isinstance(entry, dict) and i < n_saes:
                chosen[i].update(entry)

    add_all(_file_doc(path).get("saes"))
    for item in overrides:
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] != "saes":
            continue
        if len(parts) == 1:  # saes=[{...}, ...]: the whole list
            add_all(yaml.safe_load(raw))
        elif parts[1].isdigit() and int(parts[1]) < n_saes:
            value = {parts[2]: None} if len(parts) > 2 else yaml.safe_load(raw)
            chosen[int(parts[1])].update(value if isinstance(value, dict) else {})
    return chosen


def _file_doc(path: str | None) -> dict:
    """The mapping a --config file holds as written (`load_config` has already checked it)."""
    import json
    from pathlib import Path

    import yaml

    if path is None:
        return {}
    text = Path(path).read_text()
    doc = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    return doc if isinstance(doc, dict) else {}


def run(args: argparse.Namespace) -> int:
    import sae

    cfg = build_config(args)
    names = ", ".join(sae.get_architecture(s.architecture).describe(s) for s in cfg.saes)
    print(f"training {names} on {cfg.n_tokens:,} tokens of {cfg.saes[0].hook_name} -> {cfg.out_dir}")
    paths = sae.train(cfg)
    for p in paths:
        print(f"saved {p}")
    return 0
