"""Does SAELens itself load saekit's checkpoints and encode like saekit, and the reverse?

    .venv/bin/python scripts/check_saelens_interop.py             # SAELens from .venv-saelens
    .venv/bin/python scripts/check_saelens_interop.py --saelens-python /path/to/venv/bin/python

`scripts/install.sh --dev` builds .venv-saelens from requirements-saelens.lock (sae-lens pins
transformer-lens < 4, so it cannot share saekit's venv). Inputs are real activations: layer 15 of
the embedded model on a few sentences (BOS excluded: its norm is ~100x the rest). Both ways:
- saekit -> SAELens: every registered architecture, perturbed weights (thresholds set), saved with
  `sae.save_sae`; SAELens's `SAE.load_from_disk` + `encode` / `decode` (scripts/saelens_side.py);
- SAELens -> saekit: SAELens's standard / topk / jumprelu / gated SAEs saved with `save_model`,
  loaded with `sae.load_sae`;
- transcoders both ways, where SAELens has one: "transcoder" / "skip_transcoder" (saekit's ReLU) and
  "jumprelu_transcoder" / "jumprelu_skip_transcoder" (JumpReLU, and BatchTopK / Matryoshka, which
  save as JumpReLU); SAELens has no TopK or Gated transcoder, so saekit's are saekit-only
  ("topk_transcoder", ...). The output (with a skip transcoder's x W_skip^T) is compared too.
Relative error = ||ours - theirs|| / ||ours|| of the codes and of the reconstruction. Exit 1 if
any SAE fails to load or differs by more than 1e-4. tests/test_saelens_interop.py runs the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sae  # noqa: E402

HOOK = "blocks.15.hook_resid_post"
SIDE = ROOT / "scripts" / "saelens_side.py"
TOLERANCE = 1e-4
TEXTS = ["The Golden Gate Bridge is painted international orange.", "def add(a, b):\n    return a + b",
         "To make pasta, first boil a pot of salted water."]


def real_activations(model) -> torch.Tensor:
    """[N, d_model] residuals at layer 15 on TEXTS, BOS positions dropped."""
    tokenizer = model.tokenizer
    rows = []
    for text in TEXTS:
        tokens = torch.tensor([tokenizer(text)["input_ids"]])
        if tokens[0, 0] != tokenizer.bos_token_id and tokenizer.bos_token_id is not None:
            tokens = torch.cat([torch.tensor([[tokenizer.bos_token_id]]), tokens], dim=1)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=[HOOK])
        rows.append(cache[HOOK][0, 1:].float())
    return torch.cat(rows)


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).norm() / ours.norm().clamp_min(1e-12))


def _run_side(python: str, command: str, folder: Path) -> list[dict]:
    out = subprocess.run([python, str(SIDE), command, str(folder)], capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not rows:
        raise RuntimeError(f"the SAELens side ({python} {SIDE.name} {command}) failed:\n{out.stderr[-3000:]}")
    return rows


def shipped_architectures() -> list[str]:
    """The registered architectures saekit ships (files in sae/architectures/), not ones a caller
    registered at run time (the suite registers test-only ones that SAELens cannot know)."""
    return [n for n in sae.architecture_names() if sae.get_architecture(n).__module__.startswith("sae.architectures.")]


SAELENS_TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")
OUT_HOOK = "blocks.15.hook_mlp_out"


def _transcoder_cfg(arch: str, skip: bool, d_in: int) -> sae.SAEConfig:
    return sae.SAEConfig(architecture=arch, d_in=d_in, d_out=d_in // 2, d_sae=4 * d_in, k=16, hook_name=HOOK,
                         hook_name_out=OUT_HOOK, skip_connection=skip)


def transcoders(shared: bool = True) -> list[tuple[str, bool]]:
    """(architecture, skip) of saekit's transcoders that SAELens has (`shared`) or has not."""
    out = []
    for arch in shipped_architectures():
        for skip in (False, True):
            name = sae.build_sae(_transcoder_cfg(arch, skip, 8)).export_layout()[0]  # tiny: BatchTopK reads its threshold
            if (name in SAELENS_TRANSCODERS) == shared:
                out.append((arch, skip))
    return out


def _perturbed(cfg: sae.SAEConfig):
    torch.manual_seed(0)
    model = sae.build_sae(cfg)
    with torch.no_grad():
        for name, p in [*model.named_parameters(), *model.named_buffers()]:
            thresholds = torch.rand_like(p) * 0.4 + 0.3 if p.ndim else torch.tensor(0.5123)
            p.copy_(thresholds if name == "threshold" else p + torch.randn_like(p) * 0.02)
    return model


def saekit_to_saelens(x: torch.Tensor, python: str, folder: Path, dtype: str = "float32",
                      with_transcoders: bool = False) -> list[dict]:
    """Every architecture saved by saekit in `dtype` (and, `with_transcoders`, every transcoder SAELens
    has), read back by SAELens. In bf16 the thresholds are random per latent (0.3-0.7, not bf16
    values): what `save_sae` must round for SAELens."""
    x = x.to(getattr(torch, dtype))
    save_file({"x": x.contiguous()}, str(folder / "inputs.safetensors"))
    for arch in shipped_architectures():
        sae.save_sae(_perturbed(sae.SAEConfig(architecture=arch, d_in=x.shape[1], d_sae=4 * x.shape[1], k=16, hook_name=HOOK,
                                              dtype=dtype)), folder / arch)
    for arch, skip in transcoders() if with_transcoders else []:
        cfg = dataclasses.replace(_transcoder_cfg(arch, skip, x.shape[1]), dtype=dtype)
        sae.save_sae(_perturbed(cfg), folder / f"{arch}_{'skip_' if skip else ''}transcoder")
    rows = _run_side(python, "encode", folder)
    for row in rows:
        if "error" not in row:
            ours = sae.load_sae(folder / row["sae"])
            with torch.no_grad():
                codes = ours.encode(x)
                theirs = load_file(str(folder / row["sae"] / "saelens_out.safetensors"))
                row.update(codes_error=_relative(codes.float(), theirs["codes"].float()),
                           recons_error=_relative(ours.decode(codes).float(), theirs["recons"].float()),
                           output_error=_relative(ours.reconstruct(x).float(), theirs["output"].float()),
                           active=float((codes > 0).float().mean()),
                           active_set_differs=int(((codes > 0) != (theirs["codes"] > 0)).sum()), dtype=dtype)
    return rows


def saelens_to_saekit(x: torch.Tensor, python: str, folder: Path) -> list[dict]:
    save_file({"x": x.contiguous()}, str(folder / "inputs.safetensors"))
    rows = _run_side(python, "save", folder)
    for row in rows:
        if "error" in row:
            continue
        try:
            ours = sae.load_sae(folder / row["sae"])
        except Exception as e:  # a file saekit cannot read is this check's finding, not a crash
            row["error"] = f"saekit: {type(e).__name__}: {e}"
            continue
        theirs = load_file(str(folder / row["sae"] / "saelens_out.safetensors"))
        with torch.no_grad():
            codes = ours.encode(x)
            row.update(saekit_class=type(ours).__name__ + (" (transcoder)" if ours.is_transcoder else ""),
                       codes_error=_relative(theirs["codes"], codes), recons_error=_relative(theirs["recons"], ours.decode(codes)),
                       output_error=_relative(theirs["output"], ours.reconstruct(x)), active=float((codes > 0).float().mean()))
    return rows


def failures(rows: list[dict]) -> list[str]:
    def why(r: dict) -> str:
        return r.get("error") or "codes {:.2e}, recons {:.2e}, output {:.2e}".format(
            r["codes_error"], r["recons_error"], r.get("output_error", 0.0))

    def worst(r: dict) -> float:
        return max(r["codes_error"], r["recons_error"], r.get("output_error", 0.0))

    return [f"{r['sae']}: {why(r)}" for r in rows if "error" in r or worst(r) > TOLERANCE]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saelens-python", default=str(ROOT / ".venv-saelens" / "bin" / "python"))
    args = ap.parse_args()
    if not Path(args.saelens_python).exists():
        raise SystemExit(f"no SAELens python at {args.saelens_python}; build it with `scripts/install.sh --dev`")
    x = real_activations(sae.load_model())
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        rows = (saekit_to_saelens(x, args.saelens_python, Path(a), with_transcoders=True)
                + saelens_to_saekit(x, args.saelens_python, Path(b)))
    print(f"{x.shape[0]} real activations ({HOOK}); SAELens {rows[0]['saelens']}")
    print("| SAE | loaded by | codes rel. error | recons rel. error | active share |")
    print("|---|---|---|---|---|")
    for r in rows:
        by = r.get("saekit_class") or r.get("saelens_class") or "-"
        err = r.get("error")
        print(f"| {r['sae']} | {by} | {err or format(r['codes_error'], '.1e')} | {'' if err else format(r['recons_error'], '.1e')} | "
              f"{'' if err else format(r['active'], '.3f')} |")
    bad = failures(rows)
    print(f"{len(rows) - len(bad)} of {len(rows)} within {TOLERANCE:g}" + (": " + "; ".join(bad) if bad else ""))
    print("saekit transcoders SAELens has no class for (saekit-only names): "
          + ", ".join(f"{a}{' (skip)' if s else ''}" for a, s in transcoders(shared=False)))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
