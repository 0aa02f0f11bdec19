"""Does SAELens itself load saekit's checkpoints and encode like saekit, and the reverse?

    .venv/bin/python scripts/check_saelens_interop.py             # SAELens from .venv-saelens
    .venv/bin/python scripts/check_saelens_interop.py --saelens-python /path/to/venv/bin/python

`scripts/install.sh --dev` builds .venv-saelens from requirements-saelens.lock (sae-lens pins
transformer-lens < 4, so it cannot share saekit's venv). Inputs are real activations: layer 15 of
the embedded model on a few sentences (BOS excluded: its norm is ~100x the rest). Both ways:
- saekit -> SAELens: every registered architecture, perturbed weights (thresholds set), saved with
  `sae.save_sae`; SAELens's `SAE.load_from_disk` + `encode` / `decode` (scripts/saelens_side.py);
- SAELens -> saekit: SAELens's standard / topk / jumprelu / gated SAEs saved with `save_model`,
  loaded with `sae.load_sae`.
Relative error = ||ours - theirs|| / ||ours|| of the codes and of the reconstruction. Exit 1 if
any SAE fails to load or differs by more than 1e-4. tests/test_saelens_interop.py runs the same.
"""

from __future__ import annotations

import argparse
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


def saekit_to_saelens(x: torch.Tensor, python: str, folder: Path, dtype: str = "float32") -> list[dict]:
    """Every architecture saved by saekit in `dtype`, read back by SAELens. In bf16 the thresholds
    are random per latent (0.3-0.7, not bf16 values): what `save_sae` must round for SAELens."""
    x = x.to(getattr(torch, dtype))
    save_file({"x": x.contiguous()}, str(folder / "inputs.safetensors"))
    for arch in shipped_architectures():
        torch.manual_seed(0)
        cfg = sae.SAEConfig(architecture=arch, d_in=x.shape[1], d_sae=4 * x.shape[1], k=16, hook_name=HOOK, dtype=dtype)
        model = sae.build_sae(cfg)
        with torch.no_grad():
            for name, p in [*model.named_parameters(), *model.named_buffers()]:
                thresholds = torch.rand_like(p) * 0.4 + 0.3 if p.ndim else torch.tensor(0.5123)
                p.copy_(thresholds if name == "threshold" else p + torch.randn_like(p) * 0.02)
        sae.save_sae(model, folder / arch)
    rows = _run_side(python, "encode", folder)
    for row in rows:
        if "error" not in row:
            ours = sae.load_sae(folder / row["sae"])
            with torch.no_grad():
                codes = ours.encode(x)
                theirs = load_file(str(folder / row["sae"] / "saelens_out.safetensors"))
                row.update(codes_error=_relative(codes.float(), theirs["codes"].float()),
                           recons_error=_relative(ours.decode(codes).float(), theirs["recons"].float()),
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
            row.update(saekit_class=type(ours).__name__, codes_error=_relative(theirs["codes"], codes),
                       recons_error=_relative(theirs["recons"], ours.decode(codes)), active=float((codes > 0).float().mean()))
    return rows


def failures(rows: list[dict]) -> list[str]:
    def why(r: dict) -> str:
        return r.get("error") or "codes {:.2e}, recons {:.2e}".format(r["codes_error"], r["recons_error"])

    return [f"{r['sae']}: {why(r)}" for r in rows if "error" in r or max(r["codes_error"], r["recons_error"]) > TOLERANCE]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saelens-python", default=str(ROOT / ".venv-saelens" / "bin" / "python"))
    args = ap.parse_args()
    if not Path(args.saelens_python).exists():
        raise SystemExit(f"no SAELens python at {args.saelens_python}; build it with `scripts/install.sh --dev`")
    x = real_activations(sae.load_model())
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        rows = saekit_to_saelens(x, args.saelens_python, Path(a)) + saelens_to_saekit(x, args.saelens_python, Path(b))
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
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
