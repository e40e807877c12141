"""Whisper's tokens: the one table of special ids, languages, prompts, suppression and limits.

Every stage reads its token ids here (packing builds labels with them, the Transcriber builds
prompts, the engines cut at end-of-text, the generation config lists them), read from the
model's own tokenizer and generation config, never from constants: Whisper versions differ
(large-v3 has `<|nospeech|>` and 100 languages, older models `<|nocaptions|>` and 99).

Two kinds of saved tokenizer lose part of the table, and both are repaired here:
- a tokenizer whose config does not list Whisper's specials as special tokens (built straight
  from a `tokenizer.json`): languages come from the generation config's `lang_to_id`, where
  `generate()` reads them, else from the `<|xx|>` tokens of Whisper's language list;
- a tokenizer without the 1,501 timestamp tokens (CTranslate2's `tokenizer.json` stops at
  `<|notimestamps|>`): they are added at their fixed ids when the model's vocabulary has room.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pefty_whisper.errors import ModelError

if TYPE_CHECKING:
    from transformers import WhisperTokenizer

__all__ = [
    "EOT",
    "MAX_INITIAL_TIMESTAMP_INDEX",
    "MAX_TARGET_POSITIONS",
    "NON_LANGUAGE_SPECIALS",
    "NO_TIMESTAMPS",
    "SOT",
    "TIMESTAMP_COUNT",
    "TIMESTAMP_RE",
    "TIME_STEP_S",
    "WhisperTokens",
    "add_timestamp_tokens",
    "language_code",
    "timestamp_token",
    "tokenizer_language_ids",
    "whisper_suppress_tokens",
]

logger = logging.getLogger(__name__)

# Whisper's decoder positions (all released models): the cap on a label and on a decode.
MAX_TARGET_POSITIONS = 448
EOT = "<|endoftext|>"
SOT = "<|startoftranscript|>"
NO_TIMESTAMPS = "<|notimestamps|>"
# Special tokens of openai/whisper that are not language tokens (CT2's WhisperLoader uses the same
# list to tell language tokens apart).
NON_LANGUAGE_SPECIALS = (
    EOT,
    SOT,
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|nospeech|>",
    NO_TIMESTAMPS,
)
TIMESTAMP_RE = re.compile(r"<\|\d+\.\d\d\|>")
# Timestamps are <|0.00|> ... <|30.00|> on a 0.02 s grid, right after <|notimestamps|>.
TIME_STEP_S = 0.02
TIMESTAMP_COUNT = 1501
# openai/whisper's `max_initial_timestamp=1.0` s at 0.02 s per timestamp token.
MAX_INITIAL_TIMESTAMP_INDEX = 50


def timestamp_token(index: int) -> str:
    """`<|0.00|>` for 0, `<|30.00|>` for 1500."""
    return "<|%.2f|>" % (index * TIME_STEP_S)


def language_code(language: str) -> str:
    """'korean', 'ko' or '<|ko|>' -> 'ko'; a ModelError names an unknown language."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    key = language.lower().strip()
    key = key[2:-2] if key.startswith("<|") and key.endswith("|>") else key
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise ModelError(f"unknown Whisper language {language!r}: use a name like 'korean' or 'ko'")


def tokenizer_language_ids(tokenizer: WhisperTokenizer) -> dict[str, int]:
    """Language code -> token id for Whisper's languages present in the vocabulary.

    Read from the vocabulary, not from the tokenizer's special-token list, which a tokenizer
    built straight from a tokenizer.json does not carry.
    """
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    vocab = tokenizer.get_vocab()
    found = {code: vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab}
    return dict(sorted(found.items(), key=lambda item: item[1]))


def add_timestamp_tokens(tokenizer: WhisperTokenizer, vocab_size: int, where: object) -> int:
    """Add Whisper's timestamp tokens where the tokenizer lacks them; returns how many.

    They belong right after `<|notimestamps|>`, so they are added only when that is where the
    next ids fall and the model's vocabulary has room for all of them (a model that was never
    given timestamp rows cannot learn them: refused with the reason).
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    if timestamp_token(0) in vocab:
        return 0
    first = vocab.get(NO_TIMESTAMPS, -2) + 1
    if len(tokenizer) != first or first + TIMESTAMP_COUNT > vocab_size:
        raise ModelError(
            f"{where}: the tokenizer has no timestamp tokens (<|0.00|> ...) and the model's "
            f"vocabulary ({vocab_size} ids, tokenizer {len(tokenizer)}) has no room for them "
            f"after <|notimestamps|>: copy the tokenizer files from the Whisper checkpoint "
            "this model came from"
        )
    names = [timestamp_token(i) for i in range(TIMESTAMP_COUNT)]
    tokenizer.add_tokens([AddedToken(n, special=False, normalized=False) for n in names])
    logger.info("%s: added Whisper's %d timestamp tokens at ids %d+", where, len(names), first)
    return len(names)


def whisper_suppress_tokens(tokenizer: WhisperTokenizer) -> list[int]:
    """openai/whisper's default `suppress_tokens="-1"`, derived from the tokenizer.

    Symbols and speaker-tag-like tokens that never appear in a plain transcript, plus the
    special tokens that must not be generated (task, sot, prev, lm, no-speech). For the
    multilingual vocabulary this is exactly openai/whisper-base's generation_config list.
    """
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    result = {encode(" -")[0], encode(" '")[0]}
    for symbol in symbols + sorted(miscellaneous):
        for tokens in (encode(symbol), encode(" " + symbol)):
            if len(tokens) == 1 or symbol in miscellaneous:
                result.add(tokens[0])
    vocab = tokenizer.get_vocab()
    for special in (
        "<|translate|>",
        "<|transcribe|>",
        SOT,
        "<|startofprev|>",
        "<|startoflm|>",
        "<|nocaptions|>",
        "<|nospeech|>",
    ):
        if special in vocab:
            result.add(vocab[special])
    return sorted(result)


@dataclass(frozen=True)
class WhisperTokens:
    """The ids decoding and labels need, for one model's tokenizer and generation config."""

    sot: int
    eot: int
    no_timestamps: int
    no_speech: int | None  # <|nospeech|> (large-v3) or <|nocaptions|>; None if neither
    tasks: dict[str, int]  # "transcribe" / "translate" -> id
    languages: dict[str, int]  # language code -> id, as generate() reads them (lang_to_id)
    language: str | None  # the default prompt's language code; None: detect per utterance
    task: str
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    max_target_positions: int = MAX_TARGET_POSITIONS
    vocab: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: WhisperTokenizer,
        generation: Mapping[str, Any] | None = None,
        *,
        language: str | None = None,
        task: str | None = None,
        max_target_positions: int = MAX_TARGET_POSITIONS,
    ) -> WhisperTokens:
        """The table for a tokenizer and its generation config (a dict of
        generation_config.json); `language`/`task` override the config's defaults."""
        generation = dict(generation or {})
        vocab = tokenizer.get_vocab()
        for name in (SOT, EOT, NO_TIMESTAMPS):
            if name not in vocab:
                raise ModelError(f"this tokenizer has no {name} token: not a Whisper tokenizer")
        lang_to_id = generation.get("lang_to_id") or {}
        languages = {token[2:-2]: int(i) for token, i in lang_to_id.items()}
        if not languages:
            languages = tokenizer_language_ids(tokenizer)
        multilingual = bool(languages)
        chosen = language if language is not None else generation.get("language")
        code = language_code(chosen) if chosen and multilingual else None
        if code is not None and code not in languages:
            raise ModelError(f"this Whisper model has no <|{code}|> language token")
        if language is not None and not multilingual:
            logger.warning("an English-only Whisper: ignoring language=%s", language)
        return cls(
            sot=int(generation.get("decoder_start_token_id", vocab[SOT])),
            eot=int(generation.get("eos_token_id", vocab[EOT])),
            no_timestamps=vocab[NO_TIMESTAMPS],
            no_speech=vocab.get("<|nospeech|>", vocab.get("<|nocaptions|>")),
            tasks={
                t: vocab[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in vocab
            },
            languages=languages,
            language=code,
            task=task or generation.get("task") or "transcribe",
            suppress_tokens=tuple(generation.get("suppress_tokens") or ()),
            begin_suppress_tokens=tuple(generation.get("begin_suppress_tokens") or ()),
            max_target_positions=max_target_positions,
            vocab=vocab,
        )

    @property
    def multilingual(self) -> bool:
        return bool(self.languages)

    @property
    def first_timestamp(self) -> int:
        """The id of <|0.00|>: right after <|notimestamps|>, where Whisper puts it."""
        return self.no_timestamps + 1

    def timestamp(self, seconds: float) -> int:
        """The id of the timestamp token for `seconds` into a 30 s window."""
        steps = round(seconds / TIME_STEP_S)
        if not 0 <= steps < TIMESTAMP_COUNT:
            raise ValueError(f"timestamp {seconds:.2f} s is outside Whisper's 30 s window")
        return self.first_timestamp + steps

    def language_id(self, language: str) -> int:
        """The token id of a language ('korean', 'ko'); a one-line error if the model lacks it."""
        code = language_code(language)
        if code not in self.languages:
            raise ModelError(f"this Whisper model has no <|{code}|> language token")
        return self.languages[code]

    def prefix(self, language: str | None = None) -> list[int]:
        """`<|startoftranscript|><|lang|><|task|>`: what a label or a decode starts with."""
        ids = [self.sot]
        if self.multilingual:
            language = language or self.language
            if language is None:
                raise ModelError("no language to build a Whisper prompt with")
            ids += [self.language_id(language), self.tasks[self.task]]
        return ids

    def prompt(self, language: str | None = None) -> list[int]:
        """The prefix and `<|notimestamps|>`: the prompt of a decode without timestamps."""
        return [*self.prefix(language), self.no_timestamps]

    def until_eos(self, tokens: Sequence[int]) -> list[int]:
        """Generated tokens without the end-of-text token and the padding after it."""
        tokens = [int(t) for t in tokens]
        return tokens[: tokens.index(self.eot)] if self.eot in tokens else tokens

    def max_new_tokens(self, wanted: int, prompt_length: int) -> int:
        """`wanted`, capped where the prompt leaves room in the decoder's positions: every
        backend fails past them (transformers raises, CTranslate2 errors out)."""
        return max(1, min(wanted, self.max_target_positions - prompt_length))
