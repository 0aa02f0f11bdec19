"""What an SAE checkpoint folder is called and the error a bad one raises: shared by
`sae.checkpoint` (which reads and writes the folder) and `sae.hub` (which pulls one for it),
so that neither has to import the other's module to agree on a file name."""

from __future__ import annotations

WEIGHTS_FILE = "sae_weights.safetensors"
CFG_FILE = "cfg.json"


class CheckpointError(ValueError):
    """An SAE checkpoint that is missing, malformed, or does not match its config."""
