"""Generate the synthetic KsponSpeech-layout sample corpus (espeak-ng Korean) for demos and tests.

Example:
    python scripts/make_sample_corpus.py --out sample_kspon --per-part 80 --eval 40 --dev 20
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pefty_whisper.demo.corpus import generate_sample_corpus  # noqa: E402
from pefty_whisper.demo.sentences import SampleCorpusSpec  # noqa: E402
from pefty_whisper.errors import PeftyError  # noqa: E402

_DEFAULTS = SampleCorpusSpec()


@click.command(epilog="Example: python scripts/make_sample_corpus.py --out sample_kspon --seed 0")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Corpus root to create (KsponSpeech_01..05, KsponSpeech_eval, scripts/).",
)
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
@click.option(
    "--per-part",
    type=int,
    default=_DEFAULTS.utterances_per_part,
    show_default=True,
    help="Train utterances in each of the five parts.",
)
@click.option(
    "--eval",
    "eval_count",
    type=int,
    default=_DEFAULTS.eval_clean,
    show_default=True,
    help="Utterances in eval_clean and in eval_other (each).",
)
@click.option(
    "--dev",
    type=int,
    default=_DEFAULTS.dev,
    show_default=True,
    help="Dev utterances, in their own last folder(s) of part 05.",
)
@click.option("--per-folder", type=int, default=_DEFAULTS.per_folder, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing sample corpus at --out.")
def main(
    out_dir: Path,
    seed: int,
    per_part: int,
    eval_count: int,
    dev: int,
    per_folder: int,
    overwrite: bool,
) -> None:
    """Write a seeded synthetic Korean corpus in the real KsponSpeech layout."""
    spec = SampleCorpusSpec(
        utterances_per_part=per_part,
        eval_clean=eval_count,
        eval_other=eval_count,
        dev=dev,
        per_folder=per_folder,
        seed=seed,
    )
    try:
        with click.progressbar(length=spec.total_utterances, label="synthesizing") as bar:
            summary = generate_sample_corpus(
                out_dir, spec, progress=bar.update, overwrite=overwrite
            )
    except PeftyError as error:
        raise click.ClickException(str(error)) from error
    minutes = summary.audio_seconds / 60
    click.echo(
        f"{summary.out_dir}: {summary.num_utterances} utterances "
        f"(train {'+'.join(map(str, summary.train_per_part))}, dev {summary.dev}, "
        f"eval_clean {summary.eval_clean}, eval_other {summary.eval_other}), "
        f"{summary.distinct_sentences} distinct sentences"
    )
    click.echo(
        f"{minutes:.1f} min ({minutes / 60:.2f} h) of audio in {summary.elapsed_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
