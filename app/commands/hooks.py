"""`saekit hooks`: list a model's hook points (optionally filtered)."""

from __future__ import annotations

import argparse

NAME = "hooks"
HELP = "list the hook points of a model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", help="embedded default, hub id or local dir")
    p.add_argument("--grep", default=None, help="only hooks containing this text (e.g. resid_post)")


def run(args: argparse.Namespace) -> int:
    import sae

    model = sae.load_model(args.model, device="cpu")
    for name in sae.list_hooks(model):
        if args.grep is None or args.grep in name:
            print(name)
    return 0
