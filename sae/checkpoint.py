"""SAE checkpoints in SAELens's layout: `sae_weights.safetensors` + `cfg.json`. Never pickle.

Writing (`save_sae`) produces what SAELens 6 `SAE.load_from_disk` reads:

    cfg.json = {
      "architecture": <SAELens name>,                      # from the architecture's export()
      "d_in": 576, "d_sae": 4608, "dtype": "float32", "device": "cpu",
      "apply_b_dec_to_input": true, "normalize_activations": "none", "reshape_activations": "none",
      <the architecture's extra keys>,                     # e.g. TopK's "k": 32
      "metadata": {"model_name", "hook_name", "hook_head_index", "context_size", "prepend_bos",
                   "sae_lens_version": "6.0.0", ...},      # "6.0.0" declares the v6 layout
      "model_name", "hook_name", "context_size",           # also top level, for older readers
      "saekit": {"format_version": 1, "sae": <our full SAEConfig>, "trained_architecture",
                 "normalization_scale": s, ...}            # ignored by SAELens
    }
    sae_weights.safetensors = W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
                              (+ what the architecture adds, e.g. JumpReLU's fp32 threshold)

Normalisation fold. The trainer sees activations multiplied by the store's scale s (mean norm
sqrt(d_in)). Saving folds s into the weights so the file works on RAW activations with the
same codes:  W_enc' = s W_enc,  b_dec' = b_dec / s,  W_dec' = W_dec / s  (b_enc and thresholds
unchanged). Then ((x - b_dec') W_enc' + b_enc) = ((s x - b_dec) W_enc + b_enc): identical
pre-activations, so identical codes; and codes @ W_dec' + b_dec' = (normalised output) / s.
Decoder rows therefore have norm 1/s after folding; `normalize_activations` is "none".

Transcoders (`SAEConfig.hook_name_out`) are saved in SAELens's transcoder layout: "architecture"
"transcoder" / "skip_transcoder" / "jumprelu_transcoder" / "jumprelu_skip_transcoder" (and, by the
same rule, saekit-only names such as "topk_transcoder" where SAELens has none), "d_out",
"apply_b_dec_to_input": false, metadata "hook_name_out" (+ "hf_hook_name_out"), W_dec [d_sae, d_out],
b_dec [d_out] and a skip transcoder's W_skip [d_out, d_in]. Input and target were scaled by their own
factors s (input) and t (target): W_enc' = s W_enc, W_dec' = W_dec / t, b_dec' = b_dec / t,
W_skip' = W_skip s / t (no b_dec is subtracted from a transcoder's input), so the file maps raw input
activations to raw target activations.

Reading (`load_sae`) takes our files, SAELens files (v6 and older), and the native npz formats
architectures register, e.g. Gemma Scope's `params.npz` (read with allow_pickle=False). Shapes,
architectures and config fields are checked, with errors that say what to fix.

What differs between architectures (SAELens names, extra tensors and keys, tensors kept in
fp32) is asked of the architecture's class (`sae/architectures/base.py`): this module names none.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import Tensor

from sae.architectures.base import (
    SAELENS_UNNAMED,
    SparseAutoencoder,
    architectures,
    build_sae,
    from_saelens,
    get_architecture,
    native_formats,
    saelens_names,
    split_transcoder_name,
)
from sae.atomic_io import atomic_write_bytes, atomic_write_json
from sae.checkpoint_files import CFG_FILE, WEIGHTS_FILE, CheckpointError
from sae.config import ConfigError, SAEConfig, from_dict, to_dict
from sae.devices import parse_dtype

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SAELENS_LAYOUT_VERSION = "6.0.0"


# --------------------------------------------------------------------------- save


def save_sae(
    sae: SparseAutoencoder,
    path: str | Path,
    *,
    normalization_scale: float | None = None,
    target_scale: float | None = None,
    extra: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> Path:
    """Write `sae` to `path/` (created) with the normalisation scale folded in. Returns the folder.
    `target_scale`: a transcoder's target factor (the store's `target_scale`; needed whenever
    `normalization_scale` is given for a transcoder, since its input and target differ).
    `inputs`: how its training activations were made (dataset, token filter, HF module, ...; the
    trainer passes its store's provenance), merged into the SAELens metadata with the model's
    identity (`sae.embedded.model_identity`)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    arch, tensors, extra_cfg = sae.export_layout()
    scale, out_scale = _scales(sae, normalization_scale, target_scale)
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    tensors = _representable_in(tensors, _parse_dtype(sae.cfg.dtype))
    if scale != 1.0:
        tensors["W_enc"] = tensors["W_enc"] * scale
    if out_scale != 1.0:
        tensors["W_dec"] = tensors["W_dec"] / out_scale
        tensors["b_dec"] = tensors["b_dec"] / out_scale
    if "W_skip" in tensors and scale != out_scale:
        tensors["W_skip"] = tensors["W_skip"] * (scale / out_scale)
    cfg = sae.cfg
    metadata = _metadata(cfg, inputs)
    doc: dict[str, Any] = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **extra_cfg,
        "metadata": metadata,
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "context_size": cfg.context_size,
        "saekit": {
            "format_version": FORMAT_VERSION,
            "sae": to_dict(cfg),
            "trained_architecture": sae.architecture,
            "normalization_scale": scale,
            **({"target_normalization_scale": out_scale} if sae.is_transcoder else {}),
            "normalization_folded": True,
            **(extra or {}),
        },
    }
    atomic_write_bytes(out / WEIGHTS_FILE, save(tensors))
    atomic_write_json(out / CFG_FILE, doc)
    return out


def _scales(sae: SparseAutoencoder, normalization_scale: float | None,
            target_scale: float | None) -> tuple[float, float]:
    """(input, output) factors to fold; an autoencoder's output is its input, scaled alike."""
    if sae.is_transcoder and normalization_scale is not None and target_scale is None:
        raise CheckpointError(
            f"a transcoder's input ({sae.cfg.hook_name}) and target ({sae.cfg.hook_name_out}) were scaled by "
            "their own factors: pass target_scale= (the store's target_scale) beside normalization_scale"
        )
    if not sae.is_transcoder and target_scale is not None and target_scale != normalization_scale:
        raise CheckpointError(f"target_scale is a transcoder's; this SAE on {sae.cfg.hook_name} has one scale")
    out = []
    for name, value in (("normalization_scale", normalization_scale), ("target_scale", target_scale)):
        v = float(value) if value is not None else 1.0
        if not np.isfinite(v) or v <= 0:
            raise CheckpointError(f"{name} must be a positive finite number, got {value}")
        out.append(v)
    return out[0], out[1] if target_scale is not None else out[0]


def _representable_in(tensors: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """Tensors kept in fp32 beside lower-precision weights (e.g. JumpReLU thresholds) rounded to
    values `dtype` holds exactly. SAELens casts every tensor to cfg.json's dtype on load: a
    threshold it rounds would fire on activations saekit's fp32 copy rejects. Stored in fp32."""
    if dtype.itemsize >= 4:
        return tensors
    return {k: v.to(dtype).to(v.dtype) if v.is_floating_point() and v.dtype != dtype else v for k, v in tensors.items()}


def _metadata(cfg: SAEConfig, inputs: dict[str, Any] | None) -> dict[str, Any]:
    """cfg.json's "metadata": SAELens's fields, the model's identity and how the inputs were made."""
    transcoder = {"hook_name_out": cfg.hook_name_out, "hook_head_index_out": None} if cfg.hook_name_out is not None else {}
    return {
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "hook_head_index": None,
        **transcoder,
        "context_size": cfg.context_size,
        "prepend_bos": True,
        "sae_lens_version": SAELENS_LAYOUT_VERSION,
        "sae_lens_training_version": None,
        **_model_identity(cfg.model_name),
        **{k: v for k, v in (inputs or {}).items() if k not in ("model_name", "hook_name", "hook_name_out")},
    }


def _model_identity(name: str) -> dict[str, Any]:
    """The model's identity for the metadata; without the embedded GGUF at hand (an SAE saved on
    another machine), its name and a note that the file could not be hashed."""
    from sae.embedded import EmbeddedModelError, model_identity

    try:
        return {k: v for k, v in model_identity(name).items() if k != "model_name"}
    except EmbeddedModelError as e:
        log.warning("could not identify the model file of %r for cfg.json: %s", name, e)
        return {"model_source": "gguf", "gguf_sha256": None}


# --------------------------------------------------------------------------- load


def load_sae(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    normalization_scale: float | None = None,
) -> SparseAutoencoder:
    """Load an SAE (ours, SAELens's, or Gemma Scope's params.npz). It works on raw activations.

    `path`: a folder, or a Hub address `hf://OWNER/NAME[/SUBFOLDER][@REVISION]` (`sae.hub.pull_sae`:
    downloaded once into the Hugging Face cache, offline after that).
    `normalization_scale` is only for SAELens files trained with
    normalize_activations="expected_average_only_in" whose factor was not folded in.
    """
    if isinstance(path, str) and path.startswith("hf://"):
        from sae.hub import pull_sae  # huggingface_hub loads only for Hub addresses

        path = pull_sae(path)
    folder = _resolve(Path(path))
    if (folder / CFG_FILE).exists():
        raw_cfg = _read_json(folder / CFG_FILE)
        cfg, scale = _parse_cfg(raw_cfg, folder, normalization_scale)
        weights = folder / WEIGHTS_FILE
        if not weights.exists():
            raise CheckpointError(f"{folder} has {CFG_FILE} but no {WEIGHTS_FILE}; the checkpoint is incomplete")
        try:
            tensors = load_file(str(weights), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{weights} is not a readable safetensors file: {e}") from e
    else:
        cfg, tensors = _read_native(folder)
        scale = None
    tensors = _normalise_tensor_names(tensors, cfg)
    with torch.device("meta"):
        sae = build_sae(cfg)
    _check_tensors(tensors, sae, folder)
    sae.load_state_dict(tensors, strict=True, assign=True)
    if scale is not None and scale != 1.0:
        if sae.is_transcoder:
            raise CheckpointError(f"{folder}: a transcoder with an unfolded normalize_activations factor is not "
                                  "supported (its input and target need their own factors)")
        with torch.no_grad():
            sae.W_enc.mul_(scale)
            sae.W_dec.div_(scale)
            sae.b_dec.div_(scale)
    target_dtype = _parse_dtype(dtype) if dtype is not None else _parse_dtype(cfg.dtype)
    for name, p in sae.named_parameters():
        if name not in sae.keep_fp32:
            p.data = p.data.to(target_dtype)
    sae.cfg.dtype = str(target_dtype).removeprefix("torch.")
    sae.eval()
    return sae.to(device) if device is not None else sae


def _resolve(path: Path) -> Path:
    if path.is_file():
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"SAE path {path} does not exist; pass the folder that holds {CFG_FILE}")
    native = native_formats()
    if (path / CFG_FILE).exists() or any((path / f).exists() for f in native):
        return path
    children = sorted(p.parent.name for p in path.glob(f"*/{CFG_FILE}"))
    if children:
        raise CheckpointError(
            f"{path} holds several SAEs: {children}; pass one of them, e.g. {path / children[0]}"
        )
    others = "".join(f" or {f} ({label})" for f, (label, _) in native.items())
    raise CheckpointError(f"{path} has no {CFG_FILE} (SAELens layout){others}; not an SAE folder")


def _read_json(p: Path) -> dict[str, Any]:
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise _damaged(p, f"not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise _damaged(p, f"must hold a JSON object, got {type(doc).__name__}")
    return doc


def _damaged(cfg_path: Path, problem: str) -> CheckpointError:
    """A cfg.json that cannot be right, and how to get a good one back (a saekit run rewrites it
    from its trainer state; the weights file is never touched by loading)."""
    for run in (cfg_path.parent, cfg_path.parent.parent):
        if (run / "train_config.json").is_file() and (run / "checkpoints").is_dir():
            fix = (f"rewrite it with `saekit train --config {run / 'train_config.json'} --out {run}` "
                   f"(it resumes from {run / 'checkpoints'} and saves the SAE again)")
            break
    else:
        fix = "restore it from where the SAE came from (download or copy it again)"
    return CheckpointError(f"{cfg_path}: {problem}; the file is damaged or not an SAE config: {fix}")


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """`sae.devices.parse_dtype`, limited to the dtypes an SAE is stored in."""
    try:
        parsed = parse_dtype(dtype)
    except ValueError:
        parsed = None
    if parsed not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise CheckpointError(f"unsupported dtype {dtype!r}; use float32, bfloat16 or float16")
    return parsed


def _parse_cfg(raw: dict[str, Any], folder: Path, normalization_scale: float | None) -> tuple[SAEConfig, float | None]:
    """SAEConfig from a cfg.json (ours or SAELens's), and the scale still to fold in (if any)."""
    where = folder / CFG_FILE
    cls = _architecture_of(raw, where)
    ours = raw.get("saekit")
    if isinstance(ours, dict) and isinstance(ours.get("sae"), dict):
        try:
            cfg = from_dict(SAEConfig, dict(ours["sae"]))
        except ConfigError as e:
            raise _damaged(where, f"the saekit block is malformed ({e})") from e
        if cfg.architecture != cls.architecture:
            # e.g. BatchTopK is stored (and behaves) as JumpReLU: the trained architecture's options
            # stay in this block for the record but mean nothing to the class that loads it.
            cfg.architecture, cfg.options = cls.architecture, {}
    else:
        cfg = _cfg_from_saelens(raw, cls, where)
    for key, want in (("d_in", cfg.d_in), ("d_sae", cfg.d_sae)):
        if raw[key] != want:
            raise _damaged(where, f"{key}={raw[key]} disagrees with the saekit block's {want}")
    _check_transcoder_fields(raw, cfg, where)
    return cfg, _scale_to_fold(raw.get("normalize_activations", "none"), normalization_scale, where)


def _architecture_of(raw: dict[str, Any], where: Path) -> type[SparseAutoencoder]:
    """The architecture class a cfg.json names, after the checks every format needs."""
    saelens_arch = raw.get("architecture", SAELENS_UNNAMED)
    cls = from_saelens(saelens_arch, raw.get("activation_fn") or raw.get("activation_fn_str"))
    if cls is None:
        raise CheckpointError(
            f"{where}: architecture {saelens_arch!r} is not supported; supported: {saelens_names()} and their "
            "transcoders (e.g. 'transcoder', 'jumprelu_skip_transcoder') "
            f"(our architectures: {architectures()}). saekit cannot load this SAE: use it with SAELens, "
            f"or train a supported one here (`saekit train --arch {SAEConfig.architecture}`)"
        )
    for key in ("d_in", "d_sae"):
        if not isinstance(raw.get(key), int) or isinstance(raw.get(key), bool) or raw[key] <= 0:
            raise _damaged(where, f"{key!r} must be a positive integer, got {raw.get(key)!r}")
    if raw.get("rescale_acts_by_decoder_norm"):
        raise CheckpointError(f"{where}: rescale_acts_by_decoder_norm=true TopK SAEs are not supported")
    if raw.get("finetuning_scaling_factor"):
        raise CheckpointError(f"{where}: finetuning_scaling_factor SAEs are not supported")
    if raw.get("reshape_activations", "none") not in (None, "none"):
        log.warning("%s: reshape_activations=%r; pass flattened activations", where, raw["reshape_activations"])
    return cls


def _cfg_from_saelens(raw: dict[str, Any], cls: type[SparseAutoencoder], where: Path) -> SAEConfig:
    """SAEConfig from a cfg.json without a saekit block (written by SAELens or another tool)."""
    meta = raw.get("metadata") or raw.get("meta") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: 'metadata' must be an object")
    hook = meta.get("hook_name") or raw.get("hook_name") or raw.get("hook_point") or ""
    cfg = SAEConfig(
        architecture=cls.architecture,
        d_in=raw["d_in"],
        d_sae=raw["d_sae"],
        hook_name=str(hook),
        model_name=str(meta.get("model_name") or raw.get("model_name") or "unknown"),
        context_size=int(meta.get("context_size") or raw.get("context_size") or 128),
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        dtype=str(_parse_dtype(raw.get("dtype", "float32"))).removeprefix("torch."),
    )
    split = split_transcoder_name(str(raw.get("architecture", SAELENS_UNNAMED)))
    if split is not None:  # SAELens keeps the output hook in the metadata (older loaders: top level)
        d_out = raw.get("d_out")
        if not isinstance(d_out, int) or isinstance(d_out, bool) or d_out <= 0:
            raise _damaged(where, f"a transcoder needs a positive integer 'd_out', got {d_out!r}")
        cfg.hook_name_out = str(meta.get("hook_name_out") or raw.get("hook_name_out") or "")
        cfg.d_out, cfg.skip_connection, cfg.apply_b_dec_to_input = d_out, split[1], False
    try:
        cls.read_saelens_cfg(raw, cfg)
    except ValueError as e:
        raise _damaged(where, str(e)) from e
    return cfg


def _check_transcoder_fields(raw: dict[str, Any], cfg: SAEConfig, where: Path) -> None:
    """A cfg.json whose architecture name, d_out and saekit block disagree about being a transcoder."""
    split = split_transcoder_name(str(raw.get("architecture", SAELENS_UNNAMED)))
    if (split is not None) != (cfg.hook_name_out is not None) or (split is not None and split[1] != cfg.skip_connection):
        raise _damaged(where, f"architecture {raw.get('architecture')!r} disagrees with the saekit block "
                              f"(hook_name_out={cfg.hook_name_out!r}, skip_connection={cfg.skip_connection})")
    if split is not None and raw.get("d_out") != (cfg.d_out if cfg.d_out is not None else cfg.d_in):
        raise _damaged(where, f"d_out={raw.get('d_out')} disagrees with the saekit block's {cfg.d_out}")


def _scale_to_fold(norm: Any, normalization_scale: float | None, where: Path) -> float | None:
    """The dataset scale to fold into the weights, from cfg.json's normalize_activations."""
    if norm in (None, "none", False):
        return None
    if norm not in ("expected_average_only_in", True):
        raise CheckpointError(f"{where}: normalize_activations={norm!r} (a per-token rescale) is not supported")
    if normalization_scale is None:
        raise CheckpointError(
            f"{where}: this SAE expects activations scaled by a dataset factor "
            "(normalize_activations=expected_average_only_in) that is not in the file; "
            "pass load_sae(..., normalization_scale=<factor>) to fold it in"
        )
    return float(normalization_scale)


def _read_native(folder: Path) -> tuple[SAEConfig, dict[str, Tensor]]:
    """A folder in a native format an architecture registered (e.g. Gemma Scope's params.npz)."""
    name, (_, cls) = next((f, v) for f, v in native_formats().items() if (folder / f).exists())
    npz = folder / name
    try:
        with np.load(npz, allow_pickle=False) as data:
            tensors = {k: torch.from_numpy(np.array(data[k], dtype=np.float32)) for k in data.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{npz} is not a readable npz file: {e}") from e
    if "W_enc" not in tensors or tensors["W_enc"].ndim != 2:
        raise CheckpointError(f"{npz} has no 2-D W_enc; found {sorted(tensors)}")
    return cls.from_native(tensors, folder), tensors


def _normalise_tensor_names(tensors: dict[str, Tensor], cfg: SAEConfig) -> dict[str, Tensor]:
    tensors = dict(tensors)
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        if name in tensors:
            if not torch.allclose(tensors[name].float(), torch.ones_like(tensors[name].float())):
                raise CheckpointError(f"tensor {name!r} is not all ones; fine-tuned scaling factors are not supported")
            del tensors[name]
    return get_architecture(cfg.architecture).import_tensors(tensors, cfg)


def _check_tensors(tensors: dict[str, Tensor], sae: SparseAutoencoder, folder: Path) -> None:
    cfg = sae.cfg
    expected = sae.expected_tensors()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{folder}: missing tensor(s) {missing} for a {cfg.architecture} SAE (found {sorted(tensors)})")
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise CheckpointError(f"{folder}: unexpected tensor(s) {unknown} for a {cfg.architecture} SAE")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise CheckpointError(
                f"{folder}: {name} has shape {tuple(tensors[name].shape)} but cfg.json says {shape} "
                f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}); the config and weights do not belong together"
            )
        if not tensors[name].is_floating_point():
            raise CheckpointError(f"{folder}: {name} has dtype {tensors[name].dtype}; expected floating point")
