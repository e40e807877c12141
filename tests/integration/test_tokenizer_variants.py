"""Two kinds of saved Whisper tokenizer that lose part of the token table, and still train packed
windows and evaluate: one whose config does not list Whisper's specials (built straight from a
tokenizer.json), one without the 1,501 timestamp tokens (CTranslate2's tokenizer.json, older
community checkpoints)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from workspaces import make_workspace

from pefty_whisper.cli import main
from pefty_whisper.errors import ModelError
from pefty_whisper.whisper.model_dir import GENERATION_CONFIG, ModelDir
from pefty_whisper.whisper.processor import load_processor, load_tokenizer
from pefty_whisper.whisper.tokens import TIMESTAMP_COUNT, WhisperTokens, add_timestamp_tokens

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

TIMESTAMP = re.compile(r"<\|\d+\.\d\d\|>")


def without_specials_list(base: Path, out: Path) -> Path:
    shutil.copytree(base, out)
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config.pop("extra_special_tokens")  # what a tokenizer.json-only save lacks
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


def without_timestamp_tokens(base: Path, out: Path) -> Path:
    shutil.copytree(base, out)
    spec = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    kept = [t for t in spec["added_tokens"] if not TIMESTAMP.fullmatch(t["content"])]
    assert len(spec["added_tokens"]) - len(kept) == TIMESTAMP_COUNT
    spec["added_tokens"] = kept
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    base = save_tiny_whisper(root / "base", seed=4)
    return {
        "no specials list": without_specials_list(base, root / "no-specials"),
        "no timestamp tokens": without_timestamp_tokens(base, root / "no-timestamps"),
    }


def test_languages_come_from_the_generation_config_without_a_specials_list(bases) -> None:
    model_dir = bases["no specials list"]
    tokenizer = load_tokenizer(model_dir)
    assert "<|ko|>" not in tokenizer.all_special_tokens  # the list generate() does not read
    tokens = WhisperTokens.from_tokenizer(tokenizer, ModelDir(model_dir).json(GENERATION_CONFIG))
    assert len(tokens.languages) == 99 and tokens.languages["ko"] == 50264
    assert tokens.prompt() == [50258, 50264, 50359, 50363]
    # Without a generation config the vocabulary still names them.
    assert WhisperTokens.from_tokenizer(tokenizer).languages == tokens.languages


def test_missing_timestamp_tokens_are_added_at_their_ids_where_the_model_has_room(bases) -> None:
    model_dir = bases["no timestamp tokens"]
    tokenizer = load_tokenizer(model_dir)
    vocab = tokenizer.get_vocab()
    assert vocab["<|0.00|>"] == 50364 and vocab["<|30.00|>"] == 51864
    processor = load_processor(model_dir, "korean", "transcribe")
    assert processor.tokenizer.convert_tokens_to_ids("<|1.00|>") == 50364 + 50
    # A vocabulary with no room for them is refused with the reason, not patched.
    from transformers import WhisperTokenizer

    bare = WhisperTokenizer.from_pretrained(model_dir)
    with pytest.raises(ModelError, match=r"no timestamp tokens .* has no room"):
        add_timestamp_tokens(bare, vocab_size=50364, where=model_dir)


@pytest.mark.parametrize("variant", ["no specials list", "no timestamp tokens"])
def test_the_variant_trains_packed_windows_and_evaluates(bases, variant, tmp_path) -> None:
    work = make_workspace(tmp_path / "work", repeats=3)
    ws = ["--workdir", str(work)]
    steps = [
        # The base, zero-shot: a prompt built from the token table, not from specials.
        ["evaluate", "--set", "train_KsponSpeech_01_test", "--model", str(bases[variant])],
        ["train", "--round", "1", "--base", str(bases[variant]), "--quant", "none"]
        + ["--deepspeed", "none", "-o", "data.packing=true", "-o", "data.no_speech_share=1"]
        + ["-o", "train.max_steps=2", "-o", "train.eval_steps=2"],
        ["merge", "--round", "1"],
        ["evaluate", "--set", "train_KsponSpeech_01_test", "--no-longform"],
    ]
    for args in steps:
        result = CliRunner().invoke(main, [*args, *ws])
        assert result.exit_code == 0, (args[0], result.output)
    record = json.loads((work / "adapters" / "round1" / "round.json").read_text())
    assert record["packing"]["packed_windows"] >= 1 and record["packing"]["no_speech_windows"] >= 1
    summary = json.loads((work / "eval" / "round1" / "train_KsponSpeech_01_test.json").read_text())
    assert summary["num_utterances"] == 4 and summary["language"] == "ko"
