"""What pseudo-labels are worth on the sample corpus: round 3 trained on real labels, on
unfiltered and on filtered pseudo-labels, on both mixed and as a noisy student, against round 2
itself; the filter's worth; and `pefty label`'s throughput per backend, batched and not.

Rounds 1 and 2 train on parts 1 and 2 with their real transcripts (the demo's settings). The
transcripts of parts 3-5 are then hidden (a CSV of audio paths only) and round 2 labels them:

  (a) real      round 3 on part 3 with its real labels
  (b) pl-raw    round 3 on part 3 pseudo-labelled, every label kept (the filters off)
  (c) pl-filt   round 3 on parts 3-5 pseudo-labelled and filtered (the label.* defaults, and
                label.second_pass=merged/round1: the previous round's decode as the check)
  (d) round2    no round 3: round 2 itself
  (e) real+pl   part 3's real labels mixed with parts 4-5 pseudo-labelled and filtered at a
                share of 0.5 (`--train train_KsponSpeech_03_train --train p45_pl:0.5`)
  (f) pl-noisy  (c) with SpecAugment, noise and speed perturbation on the student: a noisy
                student, the usual cure for a student that learns its teacher's mistakes back

Each round 3 starts from merged/round2, trains the same steps and is evaluated on eval_clean
(`pefty evaluate`: CER with its bootstrap 95% interval), then compared with (a) and with (d) on
the same utterances by a paired bootstrap (evaluate/compare.py). The filter's worth: the label
CER (against the hidden real transcripts) of the labels (c) kept against the ones it dropped.
Throughput: part 3 labelled by round 2 through PyTorch and through its CTranslate2 int8 export,
at decode.batch_size 8 and 1, in audio hours per hour of `pefty label` (model loading included).

The sample corpus is espeak-ng speech of templated sentences: one synthetic voice family and a
narrow vocabulary, where round 2's mistakes are systematic (numbers, Latin letters, repeated
words) rather than the varied errors of real conversational speech. The figures show the
machinery, its costs and what self-training does to such mistakes, not what pseudo-labels give
on real data.

The same command run again keeps every round, label set and evaluation that finished (a killed
`pefty label` continues where it stopped), so the run can be split over several sittings; the
throughput rows are always measured again, together. Remove variants/<variant>/ or
data/<set>.csv to redo one.

    python scripts/bench_pseudo.py                         # about 35 minutes, 2 CPU cores
    python scripts/bench_pseudo.py --base tiny --max-steps 1 --eval-limit 4 --label-limit 6 \\
        --workdir /tmp/bench_pseudo_smoke                  # a smoke run of every path
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import difference_text, markdown_table, paired_figures, pefty_logged  # noqa: E402

from pefty_whisper.config import DataSection  # noqa: E402
from pefty_whisper.data.manifest import read_manifest  # noqa: E402
from pefty_whisper.data.mixing import MixEntry  # noqa: E402
from pefty_whisper.evaluate.figures import read_counts  # noqa: E402
from pefty_whisper.files import package_versions  # noqa: E402
from pefty_whisper.metrics import score_corpus  # noqa: E402
from pefty_whisper.workspace import CONFIG_FILE, EvalRecord, LabelRecord, Workspace  # noqa: E402

EVAL_SET = "eval_clean"
UNFILTERED = [
    "-o", "label.min_avg_logprob=null", "-o", "label.max_compression_ratio=null",
    "-o", "label.max_no_speech_prob=null",
]  # fmt: skip
NOISY_STUDENT = [
    "-o", "augment.spec_augment=true", "-o", "augment.noise_prob=0.5",
    "-o", "augment.speed_prob=0.5",
]  # fmt: skip


def pefty(workdir: Path, name: str, args: list[str]) -> float:
    """One `pefty` command in `workdir`, logged to logs/<name>.log; its seconds."""
    return pefty_logged(workdir, workdir / "logs" / f"{name}.log", args)


def hidden(workspace: Workspace, parts: list[int], name: str, limit: int | None) -> Path:
    """The audio of these parts' training sets without their transcripts: what label reads."""
    path = workspace.data_dir / f"{name}.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path"])
        for part in parts:
            rows = read_manifest(workspace.round_manifest(part, "train")).utterances
            writer.writerows([u.path] for u in list(rows)[:limit])
    return path


def truth(workspace: Workspace, parts: list[int]) -> dict[str, str]:
    return {
        u.path: u.sentence
        for part in parts
        for u in read_manifest(workspace.round_manifest(part, "train")).utterances
    }


def label_cer(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    if not pairs:
        return {"utterances": 0, "cer": None}
    scores = score_corpus([ref for ref, _ in pairs], [hyp for _, hyp in pairs])
    return {"utterances": len(pairs), "cer": round(scores.cer, 2)}


def filter_worth(workspace: Workspace, name: str, real: dict[str, str]) -> dict[str, Any]:
    """Label CER of the kept labels and of the dropped ones (that have text) of set `name`."""
    kept = [
        (real[u.path], u.sentence) for u in read_manifest(workspace.manifest_path(name)).utterances
    ]
    dropped = []
    with workspace.label_rejects(name).open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["text"] and row["path"] in real:
                dropped.append((real[row["path"]], row["text"]))
    return {"kept": label_cer(kept), "dropped": label_cer(dropped)}


def label_once(workdir: Path, name: str, args: list[str]) -> None:
    """`pefty label` unless set `name` is finished; a killed one continues where it stopped."""
    if not Workspace.at(workdir).manifest_path(name).is_file():
        pefty(workdir, f"label_{name}", args)


def eval_record(workdir: Path, model_label: str, limit: int | None) -> Path:
    stem = EVAL_SET if limit is None else f"{EVAL_SET}@first-{limit}"
    return workdir / "eval" / model_label / f"{stem}.json"


def evaluation(workdir: Path, model_label: str, limit: int | None) -> dict[str, Any]:
    record = EvalRecord.read(eval_record(workdir, model_label, limit))
    figure = record.protocols.get("kspon")
    interval = f"±{figure.half_width:.1f}" if figure is not None else ""
    return {"cer": round(record.cer, 2), "interval": interval, "utterances": record.num_utterances}


def round3(
    main_dir: Path, variant: str, train: list[str], args: dict[str, Any], extra: Sequence[str] = ()
) -> dict:
    """Round 3 of `variant` in its own workspace, from merged/round2 of the main one; `train`
    holds set names, each with an optional `:share`; `extra` more `pefty train` options."""
    work = main_dir / "variants" / variant
    work.mkdir(parents=True, exist_ok=True)
    (work / CONFIG_FILE).write_text((main_dir / CONFIG_FILE).read_text(), encoding="utf-8")
    data = Workspace.at(main_dir)
    trains = []
    for entry in map(MixEntry.parse, train):  # NAME[:share], as `pefty train --train` reads it
        share = f":{entry.share}" if entry.share is not None else ""
        trains += ["--train", f"{data.manifest_path(entry.name)}{share}"]
    valid = str(data.round_manifest(3, "test"))
    base = str(main_dir / "merged" / "round2")
    timing = work / "train_seconds.txt"  # kept with the round, for a run split over sittings
    if not Workspace.at(work).merge_finished(3):
        command = ["train", "--round", "3", "--base", base, *trains, "--valid", valid, "--force",
                   *args["steps"], *extra]  # fmt: skip
        seconds = pefty(work, "train", command)
        pefty(work, "merge", ["merge", "--round", "3", "--force"])
        timing.write_text(f"{seconds:.1f}\n", encoding="utf-8")
    if not eval_record(work, "round3", args["eval_limit"]).is_file():
        eval_csv = str(data.manifest_path(EVAL_SET))
        pefty(work, "evaluate", ["evaluate", "--set", eval_csv, *args["limit"]])
    return {"variant": variant, "train_seconds": float(timing.read_text(encoding="utf-8")),
            "tsv": str(eval_record(work, "round3", args["eval_limit"]).with_suffix(".tsv")),
            **evaluation(work, "round3", args["eval_limit"])}  # fmt: skip


def with_paired(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant's CER difference from (a) and from (d) on the same utterances, in points
    with the interval of the difference and its verdict."""
    counts = {r["variant"][0]: read_counts(Path(r["tsv"])) for r in results}
    for result in results:
        mine = counts[result["variant"][0]]
        for key, other in (("vs_real", "a"), ("vs_round2", "d")):
            if other == result["variant"][0]:
                continue
            result[key] = paired_figures(counts[other], mine)
    return results


def throughput(main_dir: Path, model: str, batch: int, label_limit: int | None) -> dict:
    """Part 3 labelled by `model` at decode.batch_size `batch`: audio hours per hour."""
    workspace = Workspace.at(main_dir)
    source = hidden(workspace, [3], "hidden_p3", label_limit)
    name = f"speed_{Path(model).name}_b{batch}".replace("-", "_")
    seconds = pefty(main_dir, f"label_{name}", ["label", str(source), "--name", name, "--model",
                    model, "--force", "-o", f"decode.batch_size={batch}", *UNFILTERED])  # fmt: skip
    record = LabelRecord.read(workspace.label_record_of(workspace.manifest_path(name)))
    return {"model": model, "backend": record.teacher.backend, "batch_size": batch,
            "audio_hours": record.audio_hours, "seconds": round(seconds, 1),
            "audio_hours_per_hour": round(record.audio_hours * 3600 / seconds, 2)}  # fmt: skip


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/bench_pseudo"), show_default=True)  # fmt: skip
@click.option("--base", default="whisper-base", show_default=True,
              help="whisper-base (offline, real), or tiny (random: a smoke run).")  # fmt: skip
@click.option("--max-steps", type=int, default=None, help="Cap every round's steps (smoke).")
@click.option("--eval-limit", type=int, default=None, help="Evaluate the first N (smoke).")
@click.option("--label-limit", type=int, default=None, help="Label N per part (smoke).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    workdir: Path,
    base: str,
    max_steps: int | None,
    eval_limit: int | None,
    label_limit: int | None,
    out: Path | None,
) -> None:
    """Round 3 on real, raw, filtered, mixed and noisy-student pseudo-labels against round 2;
    the filter's worth; label's throughput per backend, batched and not."""
    from pefty_whisper.data.prepare import prepare_kspon
    from pefty_whisper.demo.pipeline import demo_config, ensure_sample_corpus

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    workspace = Workspace.at(workdir)
    base_dir = _base(workdir, base)
    if not workspace.manifest_path(EVAL_SET).is_file():
        prepare_kspon(ensure_sample_corpus(workdir), workspace.data_dir, DataSection())
    config = demo_config(str(base_dir))
    if eval_limit:  # a smoke run validates on as few utterances as it evaluates
        config["train"]["max_eval_samples"] = eval_limit
    if base == "tiny":  # a random model never ends a transcript: keep its decodes short
        config["decode"]["max_new_tokens"] = 16
    (workdir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    steps = ["-o", f"train.max_steps={max_steps}"] if max_steps else []
    limit = ["--limit", str(eval_limit)] if eval_limit else []
    args = {"steps": steps, "limit": limit, "eval_limit": eval_limit}
    for index in (1, 2):  # the teacher: rounds 1 and 2 on their real labels
        if not workspace.merge_finished(index):
            pefty(workdir, f"train{index}", ["train", "--round", str(index), "--force", *steps])
            pefty(workdir, f"merge{index}", ["merge", "--round", str(index), "--force"])
    if not eval_record(workdir, "round2", eval_limit).is_file():
        pefty(workdir, "evaluate2", ["evaluate", "--set", EVAL_SET, "--model", "merged/round2",
                                     *limit])  # fmt: skip
    real = truth(workspace, [3, 4, 5])
    raw_source = hidden(workspace, [3], "hidden_p3", label_limit)
    label_once(workdir, "p3_pl_raw", ["label", str(raw_source), "--name", "p3_pl_raw",
                                      "--model", "merged/round2", *UNFILTERED])  # fmt: skip
    # A random model's labels fail every filter: a smoke run keeps them (the paths still run).
    loose = [*UNFILTERED, "-o", "label.max_disagreement_cer=null"] if base == "tiny" else []
    filt_source = hidden(workspace, [3, 4, 5], "hidden_p345", label_limit)
    filtered = ["--model", "merged/round2", "-o", "label.second_pass=merged/round1", *loose]
    label_once(workdir, "p345_pl", ["label", str(filt_source), "--name", "p345_pl", *filtered])
    worth = filter_worth(workspace, "p345_pl", real)
    mix_source = hidden(workspace, [4, 5], "hidden_p45", label_limit)
    label_once(workdir, "p45_pl", ["label", str(mix_source), "--name", "p45_pl", *filtered])
    part3 = workspace.round_manifest(3, "train").stem
    d_tsv = eval_record(workdir, "round2", eval_limit).with_suffix(".tsv")
    results = with_paired([
        round3(workdir, "a-real", [part3], args),
        round3(workdir, "b-pl-raw", ["p3_pl_raw"], args),
        round3(workdir, "c-pl-filt", ["p345_pl"], args),
        {"variant": "d-round2", "tsv": str(d_tsv), **evaluation(workdir, "round2", eval_limit)},
        round3(workdir, "e-real-pl", [part3, "p45_pl:0.5"], args),
        round3(workdir, "f-pl-noisy", ["p345_pl"], args, NOISY_STUDENT),
    ])  # fmt: skip
    export = str(workspace.export_dir_for("round2", "ct2", "int8"))
    if not Path(export).is_dir():  # an export is swapped in whole: there means finished
        pefty(workdir, "export2", ["export", "--model", "merged/round2", "--format", "ct2",
                                   "--quantization", "int8"])  # fmt: skip
    speeds = [
        throughput(workdir, model, batch, label_limit)
        for model in ("merged/round2", export)
        for batch in (8, 1)
    ]
    record = LabelRecord.read(workspace.label_record_of(workspace.manifest_path("p345_pl")))
    report = {
        "base": str(base_dir), "max_steps": max_steps, "eval_limit": eval_limit,
        "label_limit": label_limit, "rounds": results, "filter": worth,
        "filter_counts": {"kept": record.kept, "dropped": record.dropped},
        "throughput": speeds,
        "versions": package_versions("torch", "transformers", "ctranslate2", "faster-whisper"),
    }  # fmt: skip
    click.echo(markdown_table(
        ["round 3 trained on", "eval_clean CER", "95% interval", "vs (a) real", "vs (d) round 2",
         "utterances"],
        [[r["variant"], f"{r['cer']:.2f}%", r["interval"], difference_text(r.get("vs_real")),
          difference_text(r.get("vs_round2")), r["utterances"]] for r in results],
    ))  # fmt: skip
    click.echo(
        f"\nfilter (parts 3-5, round 2's labels): kept {worth['kept']['utterances']} at label "
        f"CER {worth['kept']['cer']}%, dropped {worth['dropped']['utterances']} at "
        f"{worth['dropped']['cer']}% ({record.dropped})\n"
    )
    click.echo(markdown_table(
        ["teacher", "backend", "batch", "audio h", "seconds", "audio h / h"],
        [[s["model"], s["backend"], s["batch_size"], s["audio_hours"], s["seconds"],
          s["audio_hours_per_hour"]] for s in speeds],
    ))  # fmt: skip
    target = out or workdir / "bench_pseudo.json"
    target.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo(f"\n{target}")


def _base(workdir: Path, base: str) -> Path:
    if base == "tiny":  # a random tiny Whisper with the real tokenizer: every path, no figures
        from _common import save_random_whisper

        from pefty_whisper.demo.weights import offline_base_tokenizer_dir
        from pefty_whisper.whisper.processor import WhisperDims, build_processor

        target = workdir / "tiny_base"
        if not target.is_dir():
            processor = build_processor(offline_base_tokenizer_dir(), 80, "korean", "transcribe")
            dims = WhisperDims(n_mels=80, d_model=64, encoder_layers=2, decoder_layers=2,
                               encoder_attention_heads=4, decoder_attention_heads=4,
                               encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=51865,
                               max_source_positions=1500, max_target_positions=448)  # fmt: skip
            save_random_whisper(target, dims, processor, seed=3)
        return target
    from pefty_whisper.demo.base import ensure_offline_base

    return ensure_offline_base(workdir).resolve()


if __name__ == "__main__":
    main()
