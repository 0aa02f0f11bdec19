"""A tiny, self-contained feature database: a random TopK SAE on a shallow hook, a few thousand tokens.

For tests, notebooks in fast mode and trying the explorer without training anything. The SAE
is RANDOM (its features mean nothing); `build_demo_db` says so in the database's meta.
"""

from __future__ import annotations

from pathlib import Path

import torch

DEMO_TEXT = """\
The Eiffel Tower is in Paris, the capital of France. Millions of visitors climb it every year.
def add(a: int, b: int) -> int:
    return a + b
Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.
In 1969 Neil Armstrong became the first person to walk on the Moon.
The recipe needs two cups of flour, three eggs, a pinch of salt and some butter.
<html><body><h1>Hello, world!</h1></body></html>
Stocks fell 3% on Monday after the central bank raised interest rates again.
Le chat est sur la table. Der Hund schläft im Garten. El sol brilla en el cielo.
She whispered, "I will be back before midnight," and closed the door quietly.
for i in range(10):
    print(i ** 2)
The mitochondria is the powerhouse of the cell; ribosomes build proteins from amino acids.
Q: What is 17 times 3? A: 51. Q: What is the square root of 144? A: 12.
"""


def demo_rows(tokenizer, n_rows: int, context_size: int = 64) -> list[torch.Tensor]:
    """`n_rows` BOS-first rows cut from DEMO_TEXT repeated at shifting offsets (all rows differ)."""
    ids = tokenizer(DEMO_TEXT, add_special_tokens=False).input_ids
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0
    stream = ids * (2 + n_rows * context_size // max(len(ids), 1))
    step = context_size - 1
    rows = []
    for r in range(n_rows):
        start = (r * step + r // 3) % len(ids)  # the extra shift keeps repeats of the text from aligning
        rows.append(torch.tensor([bos, *stream[start : start + step]]))
    return rows


def random_sae(d_sae: int = 256, layer: int = 2, k: int = 8, d_in: int = 576, seed: int = 0, dead: int = 1):
    """A random TopK SAE on `blocks.{layer}.hook_resid_post`; its first `dead` latents never fire."""
    from sae.architectures.base import build_sae
    from sae.config import SAEConfig

    torch.manual_seed(seed)
    s = build_sae(SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k,
                            hook_name=f"blocks.{layer}.hook_resid_post"))
    with torch.no_grad():
        s.W_enc[:, :dead] = 0.0
        s.b_enc[:dead] = -100.0  # never among the top k, and ReLU'd to 0 if it were
    return s.eval()


def build_demo_db(out_dir: str | Path, model, *, d_sae: int = 256, layer: int = 2, n_tokens: int = 2048,
                  context_size: int = 64, seed: int = 0, **features_cfg) -> tuple[Path, Path]:
    """Save a random SAE under out_dir/sae and analyse it into out_dir/features.sqlite: (db, sae dir)."""
    from sae.checkpoint import load_sae, save_sae
    from sae.config import DataConfig, FeaturesConfig
    from sae.features.build import build_feature_db

    out = Path(out_dir)
    sae_dir = save_sae(random_sae(d_sae, layer, seed=seed), out / "sae", extra={"note": "random demo SAE"})
    sae_obj = load_sae(sae_dir)
    n_rows = -(-n_tokens // context_size)
    cfg = FeaturesConfig(sae_path=str(sae_dir), out_path=str(out / "features.sqlite"), n_tokens=n_tokens,
                         batch_size=8, data=DataConfig(context_size=context_size), seed=seed, overwrite=True,
                         **features_cfg)
    rows = demo_rows(model.tokenizer, n_rows, context_size)
    return build_feature_db(cfg, model=model, sae=sae_obj, rows=rows, progress=False), sae_dir
