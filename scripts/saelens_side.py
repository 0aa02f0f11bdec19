"""The SAELens half of the interop check; runs in the SAELens venv and imports no saekit code.

    .venv-saelens/bin/python scripts/saelens_side.py encode FOLDER
    .venv-saelens/bin/python scripts/saelens_side.py save FOLDER

FOLDER holds `inputs.safetensors` ({"x": [N, d_in]}). `encode`: every sub-folder is an SAE saekit
saved; SAELens loads it (`SAE.load_from_disk`), encodes x and decodes the codes, runs its forward
(a skip transcoder's adds x W_skip^T there), and writes `saelens_out.safetensors` ({"codes", "recons",
"output"}) beside it. `save`: SAELens builds one SAE of each
architecture both libraries have (random weights, thresholds set), saves it with `save_model`
under FOLDER/saelens_<architecture>, and writes its own codes and reconstruction the same way.
One JSON line per SAE on stdout; a failure is reported in its line, not raised.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _encode(model, x: torch.Tensor, out: Path) -> dict:
    with torch.no_grad():
        codes = model.encode(x)
        recons = model.decode(codes)
        output = model(x)
    save_file({"codes": codes.contiguous(), "recons": recons.contiguous(), "output": output.contiguous()},
              str(out / "saelens_out.safetensors"))
    return {"saelens_class": type(model).__name__}


def encode_all(folder: Path) -> None:
    import sae_lens

    x = load_file(str(folder / "inputs.safetensors"))["x"]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        row = {"sae": sub.name, "saelens": sae_lens.__version__}
        try:
            row.update(_encode(sae_lens.SAE.load_from_disk(str(sub), device="cpu"), x, sub))
        except Exception as e:  # every architecture gets its row
            row["error"] = f"{type(e).__name__}: {e} | {traceback.format_exc(limit=2)[-400:]}"
        print(json.dumps(row), flush=True)


def save_all(folder: Path) -> None:
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    x = load_file(str(folder / "inputs.safetensors"))["x"]
    d_in, d_sae = x.shape[1], 4 * x.shape[1]
    meta = {"hook_name": "blocks.15.hook_resid_post", "model_name": "smollm2-135m-instruct"}
    tc = {"d_out": d_in // 2, "apply_b_dec_to_input": False}  # transcoders: another width out, no b_dec on the input
    kinds = {
        "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
        "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": 16}),
        "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
        "gated": (sae_lens.GatedSAE, sae_lens.GatedSAEConfig, {}),
        "transcoder": (sae_lens.Transcoder, sae_lens.TranscoderConfig, tc),
        "skip_transcoder": (sae_lens.SkipTranscoder, sae_lens.SkipTranscoderConfig, tc),
        "jumprelu_transcoder": (sae_lens.JumpReLUTranscoder, sae_lens.JumpReLUTranscoderConfig, tc),
        "jumprelu_skip_transcoder": (sae_lens.JumpReLUSkipTranscoder, sae_lens.JumpReLUSkipTranscoderConfig, tc),
    }
    torch.manual_seed(0)
    for name, (cls, cfg_cls, extra) in kinds.items():
        row = {"sae": f"saelens_{name}", "saelens": sae_lens.__version__}
        try:
            out_hook = {"hook_name_out": "blocks.15.hook_mlp_out"} if "d_out" in extra else {}
            model = cls(cfg_cls(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(**meta, **out_hook), **extra))
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    p.copy_(torch.randn_like(p) * (0.05 if p.ndim == 2 else 0.5))
                    if pname == "threshold":
                        p.copy_(torch.rand_like(p) * 2)
            out = folder / row["sae"]
            model.save_model(out)
            row.update(_encode(model, x, out))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e} | {traceback.format_exc(limit=2)[-400:]}"
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    {"encode": encode_all, "save": save_all}[sys.argv[1]](Path(sys.argv[2]))
