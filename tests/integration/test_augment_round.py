"""The augment: section end to end: a short real round trains with every transform on and
records what ran; SpecAugment masks the model a round trains and never what evaluation decodes;
evaluation conditions run through the CLI, kept apart from the set's own figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from fixtures import clip, save_tiny_whisper
from workspaces import make_workspace

from pefty_whisper.cli import main
from pefty_whisper.config import AugmentSection
from pefty_whisper.data.augment import Augmenter, perturbed_samples
from pefty_whisper.inference import Transcriber, TranscriberOptions
from pefty_whisper.train.plan import default_round_plan
from pefty_whisper.train.recipe import RoundTrainer
from pefty_whisper.workspace import EvalRecord, RoundRecord, Workspace

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

AUGMENT = {
    "spec_augment": True,
    "mask_time_prob": 0.2,
    "mask_feature_prob": 0.2,
    "speed_prob": 0.5,
    "noise_prob": 0.5,
    "noise_kinds": ["babble", "pink", "hum"],
    "telephone_prob": 0.3,
    "gain_prob": 0.3,
    "seed": 7,
}
EVAL_SET = "train_KsponSpeech_01_test"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("base") / "tiny", seed=4)


def with_augment(work: Path, base: Path) -> Path:
    config = yaml.safe_load((work / "pefty.yaml").read_text())
    config["augment"] = AUGMENT
    config["model"] = {"base": str(base)}
    (work / "pefty.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return work


def pefty(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_round_trains_with_augmentation_and_records_its_counts(tiny_base, tmp_path):
    work = with_augment(make_workspace(tmp_path, repeats=12), tiny_base)
    pefty(
        "train", "--round", "1", "--quant", "none", "--deepspeed", "none",
        "-o", "train.max_steps=2", "-o", "train.eval_steps=2", "-o", "data.num_workers=1",
        "-o", "data.untimed_share=0", "--workdir", str(work),
    )  # fmt: skip
    record = RoundRecord.read(work / "adapters" / "round1")
    assert record is not None and record.packing is not None and record.augment is not None
    assert record.config["augment"]["speed_prob"] == 0.5  # the section as trained
    # 3 windows (planned at the slowest speed, 0.9) make one batch of 4: an epoch a step, so
    # the 2 steps began two epochs. Each counts every utterance once, each op as often as the
    # seeded plan of its manifest row draws it in that epoch.
    assert record.packing["windows"] == 3
    augmenter = Augmenter(AugmentSection(**AUGMENT))
    plans = [augmenter.plan(row, epoch) for epoch in range(2) for row in range(48)]
    expected = {"spec_augment": True, "passes": 2, "utterances": 2 * 48}
    for plan in plans:
        for op in plan.ops:
            expected[op] = expected.get(op, 0) + 1
    assert record.augment == expected
    assert record.packing["utterances"] == 48
    assert {"speed-0.9", "speed-1.1", "noise-babble", "telephone", "gain"} <= set(expected)
    # The round finished and its adapter merges like any other.
    pefty("merge", "--round", "1", "--workdir", str(work))


def test_spec_augment_masks_the_training_model_and_never_evaluation(tiny_base, tmp_path):
    work = with_augment(make_workspace(tmp_path), tiny_base)
    workspace = Workspace.at(work)
    config = workspace.load_config()
    trainer = RoundTrainer(config, workspace, default_round_plan(workspace, config, 1))
    model = trainer.load_model()  # the round's own load path: the 8-bit base, LoRA attached
    assert model.config.apply_spec_augment and model.config.mask_time_prob == 0.2
    features = torch.from_numpy(
        trainer.processor.feature_extractor(clip(2.0, 180, 0), sampling_rate=16_000).input_features
    )
    prompt = torch.tensor([[50258, 50264, 50359]])

    def encoded() -> torch.Tensor:
        with torch.no_grad():
            out = model(input_features=features.clone(), decoder_input_ids=prompt)
        return out.encoder_last_hidden_state

    model.eval()
    plain = encoded()
    model.train()
    model.base_model.model.model.encoder.dropout = 0.0  # only the masks differ in train mode
    for layer in model.base_model.model.model.encoder.layers:
        layer.dropout = layer.activation_dropout = 0.0
    assert not torch.equal(encoded(), plain)

    # A checkpoint saved with the switch on decodes exactly as one with it off.
    on = tmp_path / "on"
    shutil.copytree(tiny_base, on)
    model_config = json.loads((on / "config.json").read_text())
    model_config |= {"apply_spec_augment": True, "mask_time_prob": 0.5, "mask_feature_prob": 0.5}
    (on / "config.json").write_text(json.dumps(model_config))
    options = TranscriberOptions(backend="torch", max_new_tokens=8)
    audios = [clip(1.5, pitch, seed) for seed, pitch in enumerate((150, 220, 310))]
    masked, unmasked = Transcriber(on, options), Transcriber(tiny_base, options)
    assert masked.engine.model.config.apply_spec_augment
    # Through WhisperModel.forward, where the masks would be drawn: the same logits.
    feats = unmasked.files.feature_extractor(audios, sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        logits = [
            t.engine.model(
                input_features=feats.input_features, decoder_input_ids=prompt.repeat(3, 1)
            ).logits
            for t in (masked, unmasked)
        ]
    assert torch.equal(*logits)
    assert masked.transcribe_batch(audios) == unmasked.transcribe_batch(audios)


def test_conditions_evaluate_through_the_cli_apart_from_the_sets_own_figure(tiny_base, tmp_path):
    work = make_workspace(tmp_path)
    ws = ["--workdir", str(work), "-o", f"model.base={tiny_base}"]
    evaluate = ["evaluate", "--set", EVAL_SET, "--no-longform", *ws]
    pefty(*evaluate)
    own_path = work / "eval" / "round0" / f"{EVAL_SET}.json"
    own = own_path.read_text()
    output = pefty(*evaluate, "--condition", "speed-1.25")
    assert f"round0 on {EVAL_SET}@speed-1.25" in output
    pefty(*evaluate, "--condition", "telephone+noise-babble-10db")
    assert own_path.read_text() == own  # the set's own figure is untouched
    sped = EvalRecord.read(work / "eval" / "round0" / f"{EVAL_SET}@cond-speed-1.25.json")
    assert sped.condition == "speed-1.25" and sped.variant == "cond-speed-1.25"
    # The decoder heard the perturbed audio: four 1 s utterances played 1.25 times faster.
    assert sped.audio_seconds == pytest.approx(4 * perturbed_samples(16_000, 1.25) / 16_000)
    assert EvalRecord.read(own_path).audio_seconds == pytest.approx(4.0)
    assert (work / "eval" / "round0" / f"{EVAL_SET}@cond-speed-1.25.tsv").is_file()

    table = pefty("rounds", "--workdir", str(work))
    header = table.splitlines()[0]
    for column in (EVAL_SET, f"{EVAL_SET}@speed-1.25", f"{EVAL_SET}@telephone+noise-babble-10db"):
        assert f"{column} CER" in header
    assert "[" not in table  # each column holds its own evaluation, none stands in for another

    bad = CliRunner().invoke(main, [*evaluate, "--condition", "telefone"])
    assert bad.exit_code != 0
    assert "Unknown evaluation condition 'telefone'" in bad.output
    assert "Did you mean 'telephone'?" in bad.output and "Traceback" not in bad.output
    no_dir = CliRunner().invoke(main, [*evaluate, "--condition", "noise-file-10db"])
    assert no_dir.exit_code != 0 and "augment.noise_dir" in no_dir.output
