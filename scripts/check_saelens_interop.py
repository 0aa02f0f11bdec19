"""Does SAELens itself load saekit's checkpoints and encode like saekit? One row per architecture.

    .venv/bin/python scripts/check_saelens_interop.py --saelens-python /work/venv-saelens/bin/python

The SAELens venv is separate (sae-lens is not a saekit dependency; see scripts/saelens_baseline.py
for how to make it). For every registered architecture this builds an SAE with perturbed weights
(thresholds set where the architecture has one), saves it with `sae.save_sae`, encodes random
inputs with saekit, then runs this same file under the SAELens python (`--load`, which imports
only sae_lens and safetensors), which loads each folder with `SAE.load_from_disk` and encodes the
same inputs. Exit 1 when any architecture fails to load or its codes differ beyond 1e-5.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D_IN, D_SAE, N = 32, 96, 256


def load_with_saelens(folder: Path) -> int:
    """Runs under the SAELens venv: one JSON line per SAE folder."""
    import sae_lens
    import torch
    from safetensors.torch import load_file

    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        x = load_file(str(folder / "inputs.safetensors"))["x"]
        want = load_file(str(sub / "codes.safetensors"))["codes"]
        row = {"sae": sub.name, "saelens": sae_lens.__version__}
        try:
            model = sae_lens.SAE.load_from_disk(str(sub), device="cpu")
            with torch.no_grad():
                got = model.encode(x)
            row.update(saelens_class=type(model).__name__, max_abs_diff=float((got - want).abs().max()),
                       active_fraction=float((want > 0).float().mean()))
        except Exception as e:  # report every architecture, not just the first failure
            row["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(row), flush=True)
    return 0


def write_checkpoints(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import torch
    from safetensors.torch import save_file

    import sae

    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D_IN, generator=g) * 3
    save_file({"x": x}, str(folder / "inputs.safetensors"))
    for arch in sae.architecture_names():
        torch.manual_seed(0)
        model = sae.build_sae(sae.SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, k=8, hook_name="blocks.3.hook_resid_post"))
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(torch.randn_like(p) * 0.1)
            for name, buf in [*model.named_parameters(), *model.named_buffers()]:
                if name == "threshold":
                    buf.copy_(torch.full_like(buf, 0.3))
        sae.save_sae(model, folder / arch)
        with torch.no_grad():
            codes = sae.load_sae(folder / arch).encode(x)
        save_file({"codes": codes.contiguous()}, str(folder / arch / "codes.safetensors"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saelens-python", default="/work/venv-saelens/bin/python")
    ap.add_argument("--load", type=Path, default=None, help=argparse.SUPPRESS)  # the SAELens side
    args = ap.parse_args()
    if args.load is not None:
        return load_with_saelens(args.load)
    if not Path(args.saelens_python).exists():
        raise SystemExit(f"no SAELens python at {args.saelens_python}; make the venv as scripts/saelens_baseline.py says")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_checkpoints(folder)
        out = subprocess.run([args.saelens_python, __file__, "--load", str(folder)], capture_output=True, text=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not rows:
        raise SystemExit(f"the SAELens side failed:\n{out.stderr[-3000:]}")
    print("| saekit architecture | loaded by SAELens as | max abs diff of codes | active fraction |")
    print("|---|---|---|---|")
    bad = 0
    for r in rows:
        ok = "error" not in r and r["max_abs_diff"] <= 1e-5
        bad += not ok
        print(f"| {r['sae']} | {r.get('saelens_class', '-')} | {r.get('max_abs_diff', r.get('error'))} | {r.get('active_fraction', '-')} |")
    print(f"SAELens {rows[0]['saelens']}: {len(rows) - bad} of {len(rows)} architectures load and encode identically")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
