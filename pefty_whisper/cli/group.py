"""The `pefty` group: one-line errors instead of tracebacks, logging, and the options every
command shares (--workdir, --config, -o)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pefty_whisper import __version__
from pefty_whisper.errors import PeftyError

if TYPE_CHECKING:
    from pefty_whisper.config import Config
    from pefty_whisper.workspace import Workspace

T = TypeVar("T")


class PeftyGroup(click.Group):
    """Turns library errors into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except PeftyError as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            from pefty_whisper.files import disk_full_error, is_disk_full

            if is_disk_full(exc):  # wherever it happened: one line, the path, the way out
                path = getattr(exc, "filename", None) or Path.cwd()
                raise click.ClickException(str(disk_full_error(path, "writing"))) from None
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
            ) from None


@click.group(cls=PeftyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pefty")
@click.option("--debug", is_flag=True, envvar="PEFTY_DEBUG", help="Show tracebacks and debug logs.")
# The DeepSpeed launcher puts --local_rank=N before the command's own arguments; the rank comes
# from LOCAL_RANK, which it sets too, so the option is accepted and ignored.
@click.option("--local_rank", "--local-rank", "local_rank", type=int, default=None, hidden=True)
def main(debug: bool, local_rank: int | None) -> None:
    """Fine-tune Whisper for Korean in rounds: LoRA on an 8-bit base, merge, repeat, export.

    \b
    pefty prepare kspon --root /data/KsponSpeech   # .trn scripts -> data/*.csv
    pefty train --round 1                          # LoRA round -> adapters/round1
    pefty merge --round 1                          # -> merged/round1
    pefty evaluate --set eval_clean                # CER / WER
    """
    _configure_logging(debug)


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[pefty %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    package_logger = logging.getLogger("pefty_whisper")
    package_logger.handlers[:] = [handler]
    package_logger.setLevel(logging.DEBUG if debug else logging.INFO)
    package_logger.propagate = False


def workspace_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--workdir, --config and -o overrides, shared by every command that reads the config."""

    @click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Workspace directory (default: the current directory).",
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="YAML config (default: pefty.yaml in the workspace, if present).",
    )
    @click.option(
        "-o",
        "--override",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config key, e.g. -o train.learning_rate=3e-4 (repeatable).",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return command(*args, **kwargs)

    return wrapper


def load_workspace(
    workdir: Path | None,
    config_path: Path | None,
    overrides: Sequence[str],
    flags: Mapping[str, object] | None = None,
) -> tuple[Workspace, Config]:
    """The workspace and its config: pefty.yaml (or --config), then the -o overrides, then the
    command's own flags. A flag is a config path (`--quant` is model.quant) and becomes one more
    override, so it is validated, typed and recorded exactly like `-o model.quant=...`."""
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    given = [f"{key}={value}" for key, value in (flags or {}).items() if value is not None]
    return workspace, workspace.load_config(config_path, (*overrides, *given))


def progress_bar(items: Sequence[T], label: str) -> Iterable[T]:
    """A tqdm bar on stderr; silent when stderr is not a terminal (logs, CI)."""
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="file", disable=None, dynamic_ncols=True)
