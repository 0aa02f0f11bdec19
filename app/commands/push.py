"""`saekit push`: upload an SAE checkpoint folder to the Hugging Face Hub with a generated model card."""

from __future__ import annotations

import argparse
import os

NAME = "push"
HELP = ("upload an SAE folder (cfg.json + sae_weights.safetensors, eval.json when present) to a Hugging Face "
        "model repository with a model card; load it back anywhere with sae.load_sae('hf://REPO_ID[/SUBFOLDER]')")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae_dir", help="SAE checkpoint folder (holds cfg.json + sae_weights.safetensors)")
    p.add_argument("repo_id", help="model repository OWNER/NAME (created when missing)")
    p.add_argument("--subfolder", default=None,
                   help="folder in the repository (several SAEs can share one, e.g. layer_15); default: its root")
    p.add_argument("--private", action="store_true", help="create the repository private (an existing one is unchanged)")
    p.add_argument("--token-env", default=None, metavar="VAR",
                   help="environment variable holding a write token (default: HF_TOKEN or the `hf auth login` token)")
    p.add_argument("--message", default=None, help="commit message")


def token_from_env(var: str | None) -> str | None:
    """The token in $VAR; None when no VAR is named (huggingface_hub then finds its own)."""
    if var is None:
        return None
    token = os.environ.get(var, "").strip()
    if not token:
        raise ValueError(f"--token-env {var}: ${var} is not set or empty; export it with a Hugging Face write token "
                         "(https://huggingface.co/settings/tokens), or omit --token-env to use HF_TOKEN / `hf auth login`")
    return token


def run(args: argparse.Namespace) -> int:
    import sae

    token = token_from_env(args.token_env)
    spec = sae.push_sae(args.sae_dir, args.repo_id, subfolder=args.subfolder, token=token, private=args.private,
                        commit_message=args.message)
    print(f"pushed {args.sae_dir} to {args.repo_id}" + (f"/{args.subfolder}" if args.subfolder else ""))
    print(f"load it with: sae.load_sae({spec.rpartition('@')[0]!r})   (pinned to this commit: {spec!r})")
    return 0
