"""The page at `/` of `pefty serve`: where its files are, and what it shows of the served model.

The model's round and eval_clean CER come from the workspace's records, found the way
`pefty evaluate --model <same model>` finds them: round.json of a merged round (MergeRecord),
export.json of an export (ExportRecord), and the summary under eval/<label>/.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pefty_whisper.errors import PeftyError

if TYPE_CHECKING:
    from pefty_whisper.config import Config
    from pefty_whisper.workspace import Workspace

__all__ = ["PAGE_DIR", "EvalFigure", "ServedModel", "describe_model"]

logger = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).parent / "web"  # index.html, page.css, page.js (package data)
CLEAN_SET = "eval_clean"


@dataclass(frozen=True)
class EvalFigure:
    """A set's figure as `pefty evaluate` wrote it: the full set, the model's own context."""

    cer: float  # percent, spaces removed (the primary figure)
    num_utterances: int
    path: str  # relative to the workspace: eval/<label>/eval_clean.json


@dataclass(frozen=True)
class ServedModel:
    """What `GET /v1/pefty/model` answers and the page's header shows."""

    name: str
    backend: str
    round: int | None = None  # merged/roundN's round.json, or an export's source_round
    label: str | None = None  # eval/<label>/: where `pefty evaluate --model` writes its figures
    eval_clean: EvalFigure | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_model(
    workspace: Workspace, config: Config, model: str, model_dir: Path, name: str, backend: str
) -> ServedModel:
    """The served model's round and eval_clean figure; what the workspace does not hold (a hub
    model, a damaged record) is left out with a warning, and the model is served anyway."""
    from pefty_whisper.workspace import EvalLabel, EvalRecord, ExportRecord, MergeRecord

    try:
        merged = MergeRecord.read(model_dir)
        export = ExportRecord.read(model_dir)
        label = workspace.model_target(config, model).label
        path = workspace.eval_json(EvalLabel(label, CLEAN_SET))
        summary = EvalRecord.read(path) if path.is_file() else None
    except PeftyError as exc:
        logger.warning("the page shows no round or eval figure for %s: %s", model, exc)
        return ServedModel(name, backend)
    if merged is not None:
        round_index = merged.round
    elif export is not None:
        round_index = export.source_round
    else:
        round_index = workspace.label_round(label)  # 0 for the configured base, else None
    figure = None
    if summary is not None:
        where = path.relative_to(workspace.root).as_posix()
        figure = EvalFigure(summary.cer, summary.num_utterances, where)
    return ServedModel(name, backend, round_index, label, figure)
