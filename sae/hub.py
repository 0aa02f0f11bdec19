"""SAEs on the Hugging Face Hub: Hub addresses, and `pull_sae`, which resolves
`hf://OWNER/NAME[/SUBFOLDER][@REVISION]` to a local folder `load_sae` reads (`sae.hub_push` uploads).

Both use huggingface_hub's own client (`HfApi.create_repo` + `upload_folder`, `snapshot_download`),
so the Hub's cache layout, auth (HF_TOKEN or `hf auth login`) and mirrors (HF_ENDPOINT) work as
everywhere else. A pulled SAE lives in the Hugging Face cache; later loads need no network:
HF_HUB_OFFLINE=1 (read when `pull_sae` is called, not only when huggingface_hub was imported)
or an unreachable Hub both fall back to the cache, and a repository in neither place is an
error that says so and how to fix it.

Addresses: `hf://owner/name` (the SAE at the repository's root), `hf://owner/name/layer_15`
(a subfolder; several SAEs can share a repository), `...@v1` or `...@<commit>` to pin a revision.
huggingface_hub's canonical form, `hf://owner/name@v1/layer_15`, is accepted too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae.checkpoint_files import CFG_FILE, WEIGHTS_FILE, CheckpointError
from sae.hub_card import CARD_FILE

log = logging.getLogger(__name__)

HF_PREFIX = "hf://"
EVAL_FILE = "eval.json"
# What a push uploads from the SAE folder when present: never the trainer's checkpoints/ (optimizer
# state, several times the SAE's size), only what loading, judging and reproducing the SAE need.
PUSH_FILES = (WEIGHTS_FILE, CFG_FILE, CARD_FILE, EVAL_FILE, "eval_density.png", "train_config.json", "metrics.jsonl")
# What a pull downloads from the SAE's folder: the files `load_sae` reads in any format it knows,
# and the card and evaluation (small), not the other checkpoints a subfolder may hold.
PULL_FILES = (CFG_FILE, WEIGHTS_FILE, "params.npz", CARD_FILE, EVAL_FILE)


class HubError(CheckpointError):
    """An SAE that cannot be pushed to or pulled from the Hugging Face Hub; the message says why and
    what to do."""


@dataclass(frozen=True)
class HubSpec:
    """A parsed `hf://` address: a model repository, a folder in it (None: its root) and a revision
    (None: the default branch)."""

    repo_id: str
    subfolder: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        return (HF_PREFIX + self.repo_id + (f"/{self.subfolder}" if self.subfolder else "")
                + (f"@{self.revision}" if self.revision else ""))


def is_hub_spec(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(HF_PREFIX)


def parse_spec(spec: str) -> HubSpec:
    """`hf://OWNER/NAME[/SUBFOLDER][@REVISION]` (or huggingface_hub's `hf://OWNER/NAME@REVISION/SUBFOLDER`)
    as a HubSpec; a malformed one raises HubError with the expected form."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    form = "expected hf://OWNER/NAME[/SUBFOLDER][@REVISION], e.g. hf://my-org/my-saes/layer_15@main"
    if not is_hub_spec(spec):
        raise HubError(f"{spec!r} is not a Hub address; {form}")
    try:
        uri = parse_hf_uri(spec)
        if "@" in uri.path_in_repo:
            if uri.revision is not None:
                raise HubError(f"{spec!r} names two revisions; {form}")
            folder, _, revision = uri.path_in_repo.partition("@")
            uri = dataclasses.replace(uri, path_in_repo=folder.strip("/"), revision=revision)
    except HfUriError as e:
        raise HubError(f"{spec!r} is not a valid Hub address ({e.msg}); {form}") from e
    if uri.type != "model":
        raise HubError(f"{spec!r} points at a {uri.type} repository; SAEs are model repositories: {form}")
    return HubSpec(uri.id, _check_subfolder(uri.path_in_repo or None, spec), uri.revision)


def _check_subfolder(subfolder: str | None, where: str) -> str | None:
    if subfolder is None or subfolder.strip("/") == "":
        return None
    parts = subfolder.strip("/").split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in subfolder or "@" in subfolder:
        raise HubError(f"{where}: subfolder {subfolder!r} is not a plain relative path (no '..', '.', '//', "
                       "'\\' or '@'); use e.g. layer_15 or blocks.15/k32")
    return "/".join(parts)


def _check_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"repo id {repo_id!r} is not valid ({e}); use OWNER/NAME, e.g. my-org/my-saes") from e
    if repo_id.count("/") != 1:
        raise HubError(f"repo id {repo_id!r} must be OWNER/NAME (your user or organisation, then a name)")
    return repo_id


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now: huggingface_hub reads it once, at import, which a notebook that
    sets os.environ after importing transformers would otherwise miss."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


# --------------------------------------------------------------------------- pull


def pull_sae(spec: str, *, token: str | None = None, endpoint: str | None = None,
             cache_dir: str | Path | None = None) -> Path:
    """The local folder of the SAE at `spec` (`hf://OWNER/NAME[/SUBFOLDER][@REVISION]`), downloaded
    into the Hugging Face cache unless already there. Offline (HF_HUB_OFFLINE=1) or with the Hub
    unreachable, the cached copy is used; a repository in neither place raises HubError."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub = parse_spec(spec)
    prefix = f"{hub.subfolder}/" if hub.subfolder else ""
    offline = _offline()
    try:
        snapshot = Path(snapshot_download(hub.repo_id, repo_type="model", revision=hub.revision, token=token,
                                          endpoint=endpoint, cache_dir=cache_dir, local_files_only=offline,
                                          allow_patterns=[prefix + f for f in PULL_FILES]))
    except (LocalEntryNotFoundError, IncompleteSnapshotError) as e:
        cache = cache_dir or constants.HF_HUB_CACHE
        why = "HF_HUB_OFFLINE is set" if offline else f"the Hub did not answer: {_first_line(e)}"
        raise HubError(
            f"{hub}: the repository {hub.repo_id} (revision {hub.revision or 'main'}) is neither in the local "
            f"Hugging Face cache ({cache}) nor reachable ({why}). Fix: load it once with network access "
            "(unset HF_HUB_OFFLINE; it is cached for offline use afterwards), point HF_HUB_CACHE at a cache "
            "that holds it, or download the SAE folder elsewhere and pass its local path") from e
    except RevisionNotFoundError as e:
        raise HubError(f"{hub}: {hub.repo_id} has no revision {hub.revision!r}; use a branch, tag or commit "
                       "it has (omit @REVISION for main)") from e
    except RepositoryNotFoundError as e:
        raise HubError(f"{hub}: no repository {hub.repo_id} on the Hub, or it is private and no token with "
                       "access was given (HF_TOKEN or `hf auth login`)") from e
    return _sae_folder(snapshot, hub, cache_dir)


def _sae_folder(snapshot: Path, hub: HubSpec, cache_dir: str | Path | None) -> Path:
    folder = snapshot / hub.subfolder if hub.subfolder else snapshot
    if any((folder / f).is_file() for f in (CFG_FILE, "params.npz")):
        return folder
    found = _cached_sae_folders(hub.repo_id, snapshot.name, cache_dir)
    where = f"folder {hub.subfolder!r}" if hub.subfolder else "its root"
    others = (f"; it holds SAEs at: {', '.join(str(HubSpec(hub.repo_id, f or None, hub.revision)) for f in found)}"
              if found else "")
    raise HubError(f"{hub}: {hub.repo_id} (commit {snapshot.name[:12]}) has no SAE in {where} (no {CFG_FILE}){others}")


def _cached_sae_folders(repo_id: str, commit: str, cache_dir: str | Path | None) -> list[str]:
    """Folders of the repository holding a cfg.json, from the file listing snapshot_download cached."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        tree = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir)
    except CachedRepoTreeNotFoundError:
        return []
    return sorted(f.path.rpartition("/")[0] for f in tree if f.path.rpartition("/")[2] == CFG_FILE)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
