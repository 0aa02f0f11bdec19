"""`push_sae`: upload an SAE checkpoint folder to the Hugging Face Hub with a generated model card.

Apart from `sae.hub` (addresses, pull) because a push first loads the SAE with `load_sae`, while
`load_sae` itself resolves `hf://` addresses through `sae.hub`: one module holding both would
import and be imported by `sae.checkpoint`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sae.atomic_io import atomic_write_text
from sae.checkpoint import CFG_FILE, WEIGHTS_FILE, load_sae
from sae.hub import (
    EVAL_FILE,
    PUSH_FILES,
    HubError,
    HubSpec,
    _check_repo_id,
    _check_subfolder,
    _offline,
)
from sae.hub_card import CARD_FILE, GENERATED_MARKER, model_card

log = logging.getLogger(__name__)


def push_sae(
    sae_dir: str | Path,
    repo_id: str,
    *,
    subfolder: str | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload the saekit SAE checkpoint in `sae_dir` to the model repository `repo_id` (created if
    missing, `private` then), under `subfolder` (None: the root), with a generated model card.
    Returns the `hf://` address that loads it back, pinned to the commit just made.

    The folder is checked before anything goes out: it must hold cfg.json and the weights, load as
    an SAE, and any eval.json must be readable. The card is written into `sae_dir` as README.md
    (a README.md without saekit's marker is yours: it is kept and uploaded as is). `token`: default
    HF_TOKEN or the `hf auth login` one; `endpoint`: default HF_ENDPOINT or huggingface.co.
    """
    folder = _checked_sae_dir(sae_dir)
    repo_id = _check_repo_id(repo_id)
    subfolder = _check_subfolder(subfolder, f"push to {repo_id}")
    cfg_doc = _read_cfg(folder)
    eval_doc = _read_eval(folder)
    if _offline():
        raise HubError(f"cannot push {folder} to {repo_id}: HF_HUB_OFFLINE is set; unset it (pushing needs the network)")
    files = [f for f in PUSH_FILES if f == CARD_FILE or (folder / f).is_file()]
    _write_card(folder, model_card(cfg_doc, eval_doc, repo_id, subfolder, files))
    return _upload(folder, repo_id, subfolder, files, token=token, private=private, endpoint=endpoint,
                   message=commit_message or f"Upload {cfg_doc.get('hook_name') or 'an'} SAE with saekit")


def _checked_sae_dir(sae_dir: str | Path) -> Path:
    folder = Path(sae_dir)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise HubError(f"cannot push {folder}: it {what}; pass the SAE folder that holds {CFG_FILE} and {WEIGHTS_FILE}")
    missing = [f for f in (CFG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
    if missing:
        children = sorted(p.parent.name for p in folder.glob(f"*/{CFG_FILE}"))
        hint = (f"it holds SAE folders {children}: push one of them, e.g. {folder / children[0]}" if children
                else "pass a folder `saekit train` or `sae.save_sae` wrote")
        raise HubError(f"cannot push {folder}: no {' and no '.join(missing)} in it; {hint}")
    load_sae(folder)  # never publish what saekit itself cannot load: its errors name the damage
    return folder


def _read_cfg(folder: Path) -> dict[str, Any]:
    from sae.atomic_io import read_json

    return read_json(folder / CFG_FILE, fix="save the SAE again", error=HubError, what="SAE config")


def _read_eval(folder: Path) -> dict[str, Any] | None:
    from sae.eval_result import load_eval

    if not (folder / EVAL_FILE).is_file():
        return None
    try:
        return load_eval(folder / EVAL_FILE)
    except (ValueError, FileNotFoundError) as e:
        raise HubError(f"cannot push {folder}: its {EVAL_FILE} is unreadable ({e}); rewrite it with "
                       f"`saekit eval {folder}` or remove it") from e


def _write_card(folder: Path, card: str) -> None:
    path = folder / CARD_FILE
    if path.is_file() and GENERATED_MARKER not in path.read_text(errors="replace"):
        log.info("%s was not written by saekit: uploading it as the model card unchanged", path)
        return
    atomic_write_text(path, card)


def _upload(folder: Path, repo_id: str, subfolder: str | None, files: list[str], *, token: str | None,
            private: bool, endpoint: str | None, message: str) -> str:
    from httpx2 import TransportError
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=folder, path_in_repo=subfolder,
                                   allow_patterns=files, commit_message=message)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        fix = ("the token lacks write access to it: pass a write token (--token-env VAR or HF_TOKEN, or "
               "`hf auth login`)" if status in (401, 403) else "check the repo id and your network, then push again")
        raise HubError(f"pushing {folder} to {repo_id} failed ({e}); {fix}") from e
    except TransportError as e:  # huggingface_hub's HTTP client: no connection, timeouts
        raise HubError(f"pushing {folder} to {repo_id} failed: the Hub is unreachable ({e}); "
                       "check your network (or HF_ENDPOINT) and push again") from e
    spec = HubSpec(repo_id, subfolder, commit.oid)
    log.info("pushed %s to %s (%s)", folder, commit.commit_url, spec)
    return str(spec)


