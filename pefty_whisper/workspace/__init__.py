"""The workspace: its layout (every path and label) and the records kept there."""

from pefty_whisper.workspace.layout import (
    BASE_LABEL,
    CONFIG_FILE,
    CONVERSION_BACKENDS,
    EvalLabel,
    ModelTarget,
    Workspace,
    export_name,
)
from pefty_whisper.workspace.records import (
    EXPORT_FILE,
    ROUND_FILE,
    DataRecord,
    EvalRecord,
    ExportParity,
    ExportProbe,
    ExportRecord,
    MergeCheck,
    MergeRecord,
    RoundData,
    RoundRecord,
    ValidationRecord,
)

__all__ = [
    "BASE_LABEL",
    "CONFIG_FILE",
    "CONVERSION_BACKENDS",
    "EXPORT_FILE",
    "ROUND_FILE",
    "DataRecord",
    "EvalLabel",
    "EvalRecord",
    "ExportParity",
    "ExportProbe",
    "ExportRecord",
    "MergeCheck",
    "MergeRecord",
    "ModelTarget",
    "RoundData",
    "RoundRecord",
    "ValidationRecord",
    "Workspace",
    "export_name",
]
