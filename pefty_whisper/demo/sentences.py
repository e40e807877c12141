"""The sample corpus's transcripts: seeded Korean sentences in ETRI notation, as in KsponSpeech.

Sentences come from templates with slots, so a model fine-tuned on the train parts can generalize to
the held-out eval sentences, which reuse the vocabulary but never a sentence. Each line comes in
the forms the generator needs: the raw ETRI notation written to the scripts, the Hangul that
espeak-ng speaks (always the pronunciation side: it reads digits and Latin letters its own way) and
the spelling-side text a model should learn to write.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from random import Random

from pefty_whisper.demo.slots import SLOTS, Word
from pefty_whisper.errors import ConfigError

logger = logging.getLogger(__name__)

NUM_PARTS = 5


@dataclass(frozen=True)
class SampleCorpusSpec:
    """Sizes and seed of a sample corpus; the defaults generate in seconds on a 2-core machine."""

    utterances_per_part: int = 80  # train utterances in each of KsponSpeech_01..05
    eval_clean: int = 40
    eval_other: int = 40
    # Extra utterances in their own last folder(s) of part 05, as the real dev set (0621-0623).
    dev: int = 20
    per_folder: int = 50  # the real corpus holds 1000 utterances per folder
    seed: int = 0

    @property
    def total_utterances(self) -> int:
        return NUM_PARTS * self.utterances_per_part + self.dev + self.eval_clean + self.eval_other


@dataclass(frozen=True)
class ScriptLine:
    """One utterance's transcript in the three forms the generator and its tests need."""

    raw: str  # ETRI notation, as written to the .trn and .txt files
    spoken: str  # the Hangul text espeak-ng reads
    text: str  # spelling side, tags removed, fillers and repetitions kept (the Whisper target)
    core: str  # `text` of the template sentence before disfluencies: the held-out key


@dataclass(frozen=True)
class SentencePools:
    """Transcripts of every split; eval cores never occur in train or dev."""

    train_parts: tuple[tuple[ScriptLine, ...], ...]  # KsponSpeech_01..05
    dev: tuple[ScriptLine, ...]
    eval_clean: tuple[ScriptLine, ...]
    eval_other: tuple[ScriptLine, ...]

    def all_lines(self) -> list[ScriptLine]:
        lines = [line for part in self.train_parts for line in part]
        return lines + list(self.dev) + list(self.eval_clean) + list(self.eval_other)


# ---------------------------------------------------------------------------------------------
# ETRI notation -> spoken and spelling text


_DUAL = re.compile(r"\(([^()]*)\)/\(([^()]*)\)")
NOISE_TAGS = frozenset({"b/", "l/", "o/", "n/", "u/"})
_PUNCTUATION = re.compile(r"[.,?!]")
# espeak-ng must never see digits or Latin letters: it would read them in its own way.
_SPEAKABLE = re.compile(r"[\uac00-\ud7a3 .,?!]*")


def _strip_marks(raw_without_duals: str) -> list[str]:
    """Drop noise-tag tokens, then the filler `/`, repetition `+`, unclear `*` and `#` marks."""
    words = []
    for token in raw_without_duals.split():
        if token in NOISE_TAGS:
            continue
        token = token.replace("*", "").replace("#", "")
        token = re.sub(r"[/+]+([.,?!]?)$", r"\1", token)
        if token:
            words.append(token)
    return words


def spoken_text(raw: str) -> str:
    """The Hangul that espeak-ng speaks for a transcript: pronunciation side, no notation."""
    words = _strip_marks(_DUAL.sub(r"\2", raw))
    spoken = " ".join(words)
    if not _SPEAKABLE.fullmatch(spoken):
        raise ValueError(f"spoken text would make espeak-ng read non-Hangul: {spoken!r} <- {raw!r}")
    return spoken


def spelling_text(raw: str) -> str:
    """Spelling side with tags and punctuation removed, fillers and repetitions kept.

    The generator's own key for the held-out check; data/kspon.py owns the real normalizer.
    """
    words = _strip_marks(_DUAL.sub(r"\1", raw))
    return " ".join(_PUNCTUATION.sub("", " ".join(words)).split())


# ---------------------------------------------------------------------------------------------
# Korean numbers (the pronunciation side of dual transcriptions)

# Everyday conversational sentences. {slot} or {slot:particle}; [a|b] picks one alternative;
# (spelling)/(pronunciation) is written as in the corpus.
TEMPLATES = (
    "{past} {place:에서} {food:을} 먹었는데 [진짜|너무|완전] 맛있었어",
    "{person:은} {future} {place:에} [간대|간다고 했어|갈 거래]",
    "{time} {place:에서} 만나기로 했잖아",
    "{past_day} {device:이} [갑자기|또] 고장 나서 (A/S)/(에이 에스) "
    "[맡겼어|받으러 가야 돼|신청했어]",
    "{past_day} {channel:에서} 하는 [드라마|예능|뉴스|야구] 봤어?",
    "요즘 {food:이} 너무 비싸서 {money:이나} 해",
    "{place:에서} [지금|이번 주에|내일부터] {percent} 할인한대",
    "{year:에} {place:에서} 처음 [일했어|알바했어|만났어]",
    "시험이 {date:이라서} [공부해야 돼|놀 시간이 없어]",
    "{person:이} {thing:을} 잃어버렸대",
    "여기서 {place:까지} {duration} 정도 걸려",
    "{future} {person:한테} 전화해 [봐|줄래?|볼게]",
    "[배고픈데|심심한데|비 오는데] {future} {food} 시켜 먹을까?",
    "{person:은} {food:을} [진짜|엄청] 좋아하더라",
    "{thing} {things} 샀는데 하나는 {person:한테} 줬어",
    "{place} 가려면 엘리베이터 타고 {floor:에서} 내리면 돼",
    "{past} 너무 추워서 그냥 집에 있었어",
    "{place:에} 사람이 너무 많아서 {duration} 기다렸어",
    "{person:은} 요즘 {hobby:에} [빠졌대|푹 빠져 있어]",
    "나 {future} {place:에서} 알바해",
    "{person:한테} [벌써|분명히] {times} 말했는데 아직도 [몰라|안 했어]",
    "지하철 {line} 타고 {place:에} 가면 돼",
    "{future} 같이 {activity} 하자고 했는데 어떻게 생각해?",
    "{past_day} 본 그 [영화|드라마] 평점이 {score:이래}",
    "{person:이} {thing:을} {money:에} 팔았대",
    "{past} {place:에서} {activity} 했어",
    "[핸드폰|노트북|이어폰|시계|태블릿] 배터리가 [벌써|이제] {percent}밖에 안 남았어",
    "{past_day} {place:에서} 찍은 사진 (SNS)/(에스 엔 에스)에 [올렸어|올려도 돼?]",
    "{person:이} {future} 결혼한대",
    "{person:이} {past_day} 늦잠 자서 {transport:을} 놓쳤대",
    "{place:에} {thing:을} 두고 왔나 봐",
    "[여기|사장님] {food} {portions} [주세요|포장해 주세요]",
    "{past_day} [회의에|모임에|수업에] {people}밖에 안 왔어",
    "{person:은} 올해 {age:이야}",
    "{future} (PC방)/(피씨방) 가서 [게임할래?|놀자]",
    "{past_day} {channel:에} 우리 [동네|학교|회사] [나왔대|나왔어]",
    "{place} [앞에|입구에] (CCTV)/(씨씨티비) 있으니까 [괜찮아|걱정 마|조심해]",
    "[혹시|여기] {place} [근처에|안에] (ATM)/(에이 티 엠) 있어?",
    "{past_day} {thing:을} 어디 뒀는지 기억이 안 나",
    "[이번 달|지난달] {bill:이} {money} [나왔어|넘게 나왔어]",
    "{person:이랑} {future} {food} 먹기로 했어",
    "{future} {transport} 타고 {place:에} 갈 거야",
    "나는 {year:에} {place:에서} {person:을} 처음 봤어",
)

# Particles whose form depends on whether the word ends in a consonant: (after consonant, vowel).
_PARTICLES = {
    "은": ("은", "는"),
    "이": ("이", "가"),
    "을": ("을", "를"),
    "과": ("과", "와"),
    "이랑": ("이랑", "랑"),
    "이나": ("이나", "나"),
    "이야": ("이야", "야"),
    "이라서": ("이라서", "라서"),
    "이래": ("이래", "래"),
}


def _has_final_consonant(word: str) -> bool:
    syllables = [ch for ch in word if "\uac00" <= ch <= "\ud7a3"]
    if not syllables:
        raise ValueError(f"particle after a word without Hangul: {word!r}")
    return (ord(syllables[-1]) - 0xAC00) % 28 != 0


def _with_particle(word: Word, particle: str) -> str:
    if particle in _PARTICLES:
        after_consonant, after_vowel = _PARTICLES[particle]
        particle = after_consonant if _has_final_consonant(word.said) else after_vowel
    return word.raw + particle


_SLOT = re.compile(r"\{(\w+)(?::(\w+))?\}")
_ALTERNATIVES = re.compile(r"\[([^\[\]]*)\]")


def realize(template: str, rng: Random) -> str:
    """Fill a template's slots and alternatives: the raw ETRI transcript of one core sentence."""
    text = _ALTERNATIVES.sub(lambda m: rng.choice(m.group(1).split("|")), template)

    def fill(match: re.Match[str]) -> str:
        word = SLOTS[match.group(1)](rng)
        return _with_particle(word, match.group(2) or "")

    return _SLOT.sub(fill, text)


# ---------------------------------------------------------------------------------------------
# Disfluencies and tags: what makes a transcript look like spontaneous KsponSpeech speech

FILLERS = ("어", "음", "그", "아", "뭐", "이제")
_HANGUL_WORD = re.compile(r"[\uac00-\ud7a3]{2,}")


def _plain_positions(tokens: list[str]) -> list[int]:
    """Tokens that are pure Hangul words, the ones a speaker can stumble on or repeat."""
    return [i for i, token in enumerate(tokens) if _HANGUL_WORD.fullmatch(token)]


def add_disfluencies(core_raw: str, rng: Random) -> str:
    """Decorate a core sentence with fillers, repetitions, noise tags and rare `*`/`#` marks."""
    tokens = core_raw.split()
    # Duals hold spaces inside their parentheses; keep each dual (and its particle) one token.
    tokens = _rejoin_duals(tokens)
    plain = _plain_positions(tokens)
    if plain and rng.random() < 0.18:
        i = rng.choice(plain)
        # Mostly a false start on the first syllable (그+ 그거), sometimes the whole word.
        stutter = tokens[i][0] if rng.random() < 0.7 else tokens[i]
        tokens.insert(i, stutter + "+")
    plain = _plain_positions(tokens)  # a stutter like 그+ is no longer a plain word
    if plain and rng.random() < 0.06:
        i = rng.choice(plain)
        tokens[i] = tokens[i] + "*"  # the word was hard to make out
    elif plain and rng.random() < 0.05:
        i = rng.choice(plain)
        tokens[i] = "#" + tokens[i]
    if rng.random() < 0.4:
        position = 0 if rng.random() < 0.6 else rng.randint(0, len(tokens) - 1)
        tokens.insert(position, rng.choice(FILLERS) + "/")
    if not tokens[-1].endswith("?") and rng.random() < 0.1:
        tokens[-1] += "."  # the corpus marks some sentence ends
    return " ".join(_add_noise_tags(tokens, rng))


def _rejoin_duals(tokens: list[str]) -> list[str]:
    joined: list[str] = []
    depth_open = False
    for token in tokens:
        if depth_open:
            joined[-1] += " " + token
        else:
            joined.append(token)
        depth_open = joined[-1].count("(") > joined[-1].count(")")
    return joined


def _add_noise_tags(tokens: list[str], rng: Random) -> list[str]:
    # Tags sit at the edges, where the audio can carry them (a noise burst in the padding).
    lead = rng.choices(("", "o/", "n/", "u/"), weights=(84, 6, 7, 3))[0]
    trail = rng.choices(("", "b/", "l/", "n/"), weights=(70, 20, 5, 5))[0]
    return ([lead] if lead else []) + tokens + ([trail] if trail else [])


# ---------------------------------------------------------------------------------------------
# Sentence pools


def _draw_cores(rng: Random, count: int, exclude: set[str], unique: bool) -> list[str]:
    """Draw `count` core transcripts whose spelling text is not in `exclude` (updated in place)."""
    cores: list[str] = []
    attempts = 0
    while len(cores) < count:
        attempts += 1
        raw = realize(rng.choice(TEMPLATES), rng)
        key = spelling_text(raw)
        if key in exclude:
            if attempts > 200 * (count + 10):
                if unique:
                    raise ConfigError(
                        f"the sentence templates hold too few distinct sentences for {count} "
                        "held-out eval utterances: lower the eval counts"
                    )
                # Train may repeat a train sentence (never an eval one) once the grammar runs dry.
                return cores + _repeat_cores(rng, cores, count - len(cores))
            continue
        exclude.add(key)
        cores.append(raw)
    return cores


def _repeat_cores(rng: Random, cores: list[str], missing: int) -> list[str]:
    logger.warning("sentence grammar exhausted: %d train sentences repeat", missing)
    return [rng.choice(cores) for _ in range(missing)]


def _script_lines(cores: list[str], seed: int, split: str) -> tuple[ScriptLine, ...]:
    lines = []
    for index, core in enumerate(cores):
        # One generator per utterance, so a line does not change when the counts before it do.
        raw = add_disfluencies(core, Random(f"pefty-sample:{seed}:{split}:{index}:disfluency"))
        lines.append(ScriptLine(raw, spoken_text(raw), spelling_text(raw), spelling_text(core)))
    return tuple(lines)


def sentence_pools(spec: SampleCorpusSpec = SampleCorpusSpec()) -> SentencePools:
    """Every split's transcripts, without audio: eval sentences are held out from train and dev.

    Eval sentences are drawn first from their own stream, so they stay the same when the train
    sizes change; every train part gets new sentences while the grammar allows.
    """
    check_spec(spec)
    taken: set[str] = set()
    eval_rng = Random(f"pefty-sample:{spec.seed}:eval")
    eval_clean = _draw_cores(eval_rng, spec.eval_clean, taken, unique=True)
    eval_other = _draw_cores(eval_rng, spec.eval_other, taken, unique=True)
    train_rng = Random(f"pefty-sample:{spec.seed}:train")
    parts = [
        _draw_cores(train_rng, spec.utterances_per_part, taken, unique=False)
        for _ in range(NUM_PARTS)
    ]
    dev = _draw_cores(train_rng, spec.dev, taken, unique=False)
    return SentencePools(
        train_parts=tuple(
            _script_lines(part, spec.seed, f"train{n}") for n, part in enumerate(parts, 1)
        ),
        dev=_script_lines(dev, spec.seed, "dev"),
        eval_clean=_script_lines(eval_clean, spec.seed, "eval_clean"),
        eval_other=_script_lines(eval_other, spec.seed, "eval_other"),
    )


def check_spec(spec: SampleCorpusSpec) -> None:
    if spec.utterances_per_part < 1 or spec.per_folder < 1:
        raise ConfigError(
            f"utterances_per_part and per_folder must be at least 1, got "
            f"{spec.utterances_per_part} and {spec.per_folder}"
        )
    for name in ("eval_clean", "eval_other", "dev"):
        if getattr(spec, name) < 0:
            raise ConfigError(f"{name} must be 0 or more, got {getattr(spec, name)}")
