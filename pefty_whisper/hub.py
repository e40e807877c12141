"""`pefty push`: a merged round or an export uploaded to the Hugging Face Hub with its card.

huggingface_hub does the upload (create_repo, upload_folder); what pefty adds is the card
rewritten first (card.py) to name the repository, and one line instead of a traceback when the
Hub cannot be reached: offline (HF_HUB_OFFLINE), a network error, or a refusal (not logged in).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pefty_whisper.card import CARD_FILE, is_pefty_card, write_model_card
from pefty_whisper.errors import PeftyError
from pefty_whisper.whisper.model_dir import ModelDir
from pefty_whisper.workspace import ExportRecord, MergeRecord, Workspace

if TYPE_CHECKING:
    from pefty_whisper.config import Config

__all__ = ["push_model"]

logger = logging.getLogger(__name__)


def push_model(
    workspace: Workspace,
    config: Config,
    model: str | Path,
    repo: str,
    private: bool = False,
    message: str | None = None,
) -> str:
    """Upload a model directory (a path, or one in the workspace: merged/round5) to the Hub
    with huggingface_hub (create_repo, upload_folder), its card rewritten first to name the
    repository; offline, one line that says so."""
    model_dir = _local_dir(workspace, str(model))
    if model_dir is None:
        raise PeftyError(f"{model}: no such model directory (in {workspace.root} or here)")
    backend = ModelDir(model_dir).backend  # a non-model directory fails here, with the way out
    if "/" not in repo:
        raise PeftyError(f"--repo {repo!r}: name the Hub repository as user/name (or org/name)")
    from huggingface_hub import constants, create_repo, upload_folder
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    offline = (
        f"cannot push {model_dir} to {repo}: offline (HF_HUB_OFFLINE is set); push from a "
        "machine that reaches huggingface.co"
    )
    if constants.HF_HUB_OFFLINE:  # before the card is rewritten for the push
        raise PeftyError(offline)
    card = model_dir / CARD_FILE
    if is_pefty_card(card) or (not card.exists() and _has_records(model_dir)):
        write_model_card(workspace, config, model_dir, repo)
    try:
        create_repo(repo, private=private, exist_ok=True)
        commit = upload_folder(
            repo_id=repo,
            folder_path=model_dir,
            commit_message=message or f"pefty push {model_dir.name} ({backend})",
            ignore_patterns=[".*", "*.partial"],
        )
    except OfflineModeIsEnabled:
        raise PeftyError(offline) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = "log in with `hf auth login` or set HF_TOKEN" if status in (401, 403) else ""
        raise PeftyError(
            f"the Hub refused the push of {model_dir} to {repo}: {_first_line(exc)}"
            + (f"; {hint}" if hint else "")
        ) from None
    except Exception as exc:
        if not _is_connection_error(exc):
            raise
        raise PeftyError(
            f"cannot push {model_dir} to {repo}: the Hugging Face Hub is unreachable "
            f"({_first_line(exc)}); check the network and run `pefty push` again"
        ) from None
    return str(getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo}")


def _is_connection_error(exc: BaseException) -> bool:
    """requests, httpx and the socket layer each name it their way."""
    names = {c.__name__ for c in type(exc).__mro__}
    network = {"ConnectionError", "ConnectError", "NetworkError", "TransportError", "Timeout"}
    return isinstance(exc, ConnectionError | TimeoutError) or bool(names & network)


def _has_records(model_dir: Path) -> bool:
    return MergeRecord.read(model_dir) is not None or ExportRecord.read(model_dir) is not None


def _local_dir(workspace: Workspace, model: str) -> Path | None:
    for candidate in (Path(model), workspace.root / model):
        if candidate.is_dir():
            return candidate
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
