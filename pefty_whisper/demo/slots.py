"""The words that fill the sample corpus's template slots: people, places, times, money and
counted things, each with its spelling and the Hangul espeak-ng speaks (Korean number readings
included: sino-Korean and native counting)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from random import Random

_SINO_DIGITS = "영일이삼사오육칠팔구"
_NATIVE_ONES = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
_NATIVE_TENS = ("", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔")


def _sino_below_10000(n: int) -> str:
    out = ""
    for unit_value, unit in ((1000, "천"), (100, "백"), (10, "십")):
        digit, n = divmod(n, unit_value)
        if digit:
            # Korean drops the "일" before 천, 백 and 십: 1500 is 천오백, not 일천오백.
            out += ("" if digit == 1 else _SINO_DIGITS[digit]) + unit
    return out + (_SINO_DIGITS[n] if n else "")


def sino_korean(n: int) -> str:
    """Sino-Korean reading (dates, money, percent, minutes): 2019 -> 이천십구, 15000 -> 만 오천."""
    if n == 0:
        return "영"
    man, rest = divmod(n, 10_000)
    parts = []
    if man:
        parts.append(("" if man == 1 else _sino_below_10000(man)) + "만")
    if rest:
        parts.append(_sino_below_10000(rest))
    return " ".join(parts)


def native_korean(n: int) -> str:
    """Native Korean before a counter (hours, items, people, age): 3 -> 세, 25 -> 스물다섯."""
    if not 1 <= n <= 99:
        raise ValueError(f"native Korean numbers here cover 1-99, got {n}")
    if n == 20:
        return "스무"
    tens, ones = divmod(n, 10)
    return _NATIVE_TENS[tens] + _NATIVE_ONES[ones]


def _month(n: int) -> str:
    # 6월 and 10월 drop their final consonant: 유월, 시월.
    return {6: "유월", 10: "시월"}.get(n, f"{sino_korean(n)} 월")


# ---------------------------------------------------------------------------------------------
# Sentence grammar


@dataclass(frozen=True)
class Word:
    """A slot value; `spoken` is set when spelling and pronunciation differ (digits, acronyms)."""

    spelling: str
    spoken: str | None = None
    # A particle rides outside the dual notation, as in the corpus: (3시)/(세 시)에.
    suffix: str = ""

    @property
    def raw(self) -> str:
        body = self.spelling if self.spoken is None else f"({self.spelling})/({self.spoken})"
        return body + self.suffix

    @property
    def said(self) -> str:
        return (self.spelling if self.spoken is None else self.spoken) + self.suffix

    def with_suffix(self, suffix: str) -> Word:
        return replace(self, suffix=self.suffix + suffix)


def _words(*items: str | tuple[str, str]) -> tuple[Word, ...]:
    return tuple(Word(item) if isinstance(item, str) else Word(*item) for item in items)


PEOPLE = _words(
    "엄마", "아빠", "동생", "친구", "선배", "후배", "팀장님", "언니", "오빠", "형", "누나",
    "남자 친구", "여자 친구", "사촌 동생", "옆집 아저씨", "담임 선생님", "민수", "지영이",
    "과장님", "룸메이트",
)  # fmt: skip
PAST_DAYS = _words(
    "어제", "아까", "그저께", "지난주에", "오늘 아침에", "지난 주말에", "작년에", "방학 때",
)  # fmt: skip
FUTURE_DAYS = _words(
    "내일", "이따가", "모레", "다음 주에", "이번 주말에", "저녁에", "퇴근하고", "점심 먹고",
)  # fmt: skip
PLACES = _words(
    "학교", "회사", "카페", "편의점", "도서관", "병원", "시장", "백화점", "공원", "식당", "영화관",
    "헬스장", "지하철역", "은행", "미용실", "노래방", "할머니 댁", "강남역", "홍대", "부산",
    ("PC방", "피씨방"),
)  # fmt: skip
FOODS = _words(
    "떡볶이", "김치찌개", "치킨", "라면", "짜장면", "비빔밥", "삼겹살", "피자", "커피", "냉면",
    "김밥", "순대", "된장찌개", "초밥", "햄버거", "파스타", "마라탕", "붕어빵",
)  # fmt: skip
THINGS = _words(
    "핸드폰", "노트북", "가방", "우산", "책", "지갑", "신발", "이어폰", "시계", "카드", "충전기",
    "안경", "모자", "자전거", ("USB", "유 에스 비"),
)  # fmt: skip
DEVICES = _words(
    "노트북", "핸드폰", "냉장고", "세탁기", "에어컨", "컴퓨터", "청소기", ("TV", "티비"),
)  # fmt: skip
CHANNELS = _words(
    ("KBS", "케이 비 에스"), ("MBC", "엠 비 씨"), ("SBS", "에스 비 에스"), ("EBS", "이 비 에스"),
    ("TV", "티비"), "유튜브", "넷플릭스", "라디오",
)  # fmt: skip
TRANSPORT = _words(
    ("KTX", "케이 티 엑스"), ("SRT", "에스 알 티"), "지하철", "버스", "막차", "첫차", "비행기",
)  # fmt: skip
ACTIVITIES = _words(
    "운동", "공부", "청소", "쇼핑", "산책", "요리", "게임", "등산", "빨래", "발표 준비",
    ("PPT", "피피티"), ("MT", "엠티"), "알바",
)  # fmt: skip
HOBBIES = _words(
    "골프", "캠핑", "뜨개질", "요가", "게임", "낚시", "테니스", "드라마", "베이킹", "클라이밍",
    ("SNS", "에스 엔 에스"), "유튜브",
)  # fmt: skip
BILLS = _words("월세", "관리비", "전기 요금", "가스비", "휴대폰 요금")


def _clock_time(rng: Random) -> Word:
    hour = rng.randint(1, 12)
    minute = rng.choice((0, 0, 0, 30, 10, 20, 40, 50))
    suffix = rng.choice(("에", "에", "쯤"))
    if minute == 0:
        return Word(f"{hour}시", f"{native_korean(hour)} 시").with_suffix(suffix)
    if minute == 30 and rng.random() < 0.5:
        return Word(f"{hour}시 반", f"{native_korean(hour)} 시 반").with_suffix(suffix)
    spoken = f"{native_korean(hour)} 시 {sino_korean(minute)} 분"
    return Word(f"{hour}시 {minute}분", spoken).with_suffix(suffix)


def _date(rng: Random) -> Word:
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    if rng.random() < 0.3:
        return Word(f"{month}월", _month(month))
    return Word(f"{month}월 {day}일", f"{_month(month)} {sino_korean(day)} 일")


def _when(days: Sequence[Word]) -> Callable[[Random], Word]:
    """A time phrase carrying its particle: a day word, (3시)/(세 시)에 or (5월)/(오 월)에."""

    def draw(rng: Random) -> Word:
        kind = rng.random()
        if kind < 0.5:
            return rng.choice(days)
        if kind < 0.85:
            return _clock_time(rng)
        return _date(rng).with_suffix("에")

    return draw


def _year(rng: Random) -> Word:
    year = rng.randint(1995, 2024)
    return Word(f"{year}년", f"{sino_korean(year)} 년")


def _money(rng: Random) -> Word:
    amount = rng.choice(
        (1000, 1500, 2000, 3000, 4500, 5000, 8000, 10000, 12000, 15000, 20000, 30000, 50000)
    )
    return Word(f"{amount}원", f"{sino_korean(amount)} 원")


def _percent(rng: Random) -> Word:
    value = rng.choice((10, 15, 20, 30, 40, 50, 60, 70, 80, 90))
    # Speakers say both 퍼센트 and 프로 for %; the spelling side is the same.
    return Word(f"{value}%", f"{sino_korean(value)} {rng.choice(('퍼센트', '프로'))}")


def _counted(rng: Random, counter: str, low: int, high: int, native: bool) -> Word:
    n = rng.randint(low, high)
    said = native_korean(n) if native else sino_korean(n)
    return Word(f"{n}{counter}", f"{said} {counter}")


def _duration(rng: Random) -> Word:
    if rng.random() < 0.7:
        minutes = rng.choice((5, 10, 15, 20, 30, 40, 50))
        return Word(f"{minutes}분", f"{sino_korean(minutes)} 분")
    return _counted(rng, "시간", 1, 5, native=True)


def _score(rng: Random) -> Word:
    whole, tenth = rng.randint(2, 4), rng.randint(0, 9)
    return Word(f"{whole}.{tenth}점", f"{sino_korean(whole)} 점 {sino_korean(tenth)} 점")


def _age(rng: Random) -> Word:
    return _counted(rng, "살", 19, 45, native=True)


def _pick(values: Sequence[Word]) -> Callable[[Random], Word]:
    return lambda rng: rng.choice(values)


SLOTS: dict[str, Callable[[Random], Word]] = {
    "person": _pick(PEOPLE),
    # Past and future times keep the tense of the sentence believable; `time` is either.
    "past": _when(PAST_DAYS),
    "future": _when(FUTURE_DAYS),
    "time": _when(PAST_DAYS + FUTURE_DAYS),
    "past_day": _pick(PAST_DAYS),
    "place": _pick(PLACES),
    "food": _pick(FOODS),
    "thing": _pick(THINGS),
    "device": _pick(DEVICES),
    "channel": _pick(CHANNELS),
    "transport": _pick(TRANSPORT),
    "activity": _pick(ACTIVITIES),
    "hobby": _pick(HOBBIES),
    "bill": _pick(BILLS),
    "year": _year,
    "date": _date,
    "money": _money,
    "percent": _percent,
    "duration": _duration,
    "score": _score,
    "age": _age,
    "things": lambda rng: _counted(rng, "개", 2, 5, native=True),
    "people": lambda rng: _counted(rng, "명", 2, 9, native=True),
    "times": lambda rng: _counted(rng, "번", 2, 5, native=True),
    "floor": lambda rng: _counted(rng, "층", 2, 15, native=False),
    "line": lambda rng: _counted(rng, "호선", 1, 9, native=False),
    "portions": lambda rng: _counted(rng, "인분", 1, 4, native=False),
}
