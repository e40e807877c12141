"""KsponSpeech transcript parsing and ETRI-notation normalization, on real-style lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from pefty_whisper.data.kspon import (
    TranscriptSides,
    TrnLine,
    normalize_sides,
    normalize_transcript,
    parse_trn_line,
    read_cp949_transcript,
)
from pefty_whisper.errors import DataError

# (input, expected in spelling mode, expected in phonetic mode), all written by hand.
BOTH_MODES = [
    pytest.param(
        "o/ 그래서 지금 (1시)/(한 시)에 가는 거야?",
        "그래서 지금 1시에 가는 거야?",
        "그래서 지금 한 시에 가는 거야?",
        id="tag-at-start-dual-glued-to-hangul",
    ),
    pytest.param(
        "b/ 아/ 몰라 그거 (3G)/(쓰리 쥐)로 해도 되는데 n/",
        "아 몰라 그거 3G로 해도 되는데",
        "아 몰라 그거 쓰리 쥐로 해도 되는데",
        id="tags-at-start-and-end-filler",
    ),
    pytest.param(
        "그거 진짜 l/ (A/S)/(에이 에스) 받아야 돼",
        "그거 진짜 A/S 받아야 돼",
        "그거 진짜 에이 에스 받아야 돼",
        id="slash-inside-spelling-side-kept",
    ),
    pytest.param(
        "u/ 근데 그 사람이 어/ 그 그+ 그러니까 좀 이상해",
        "근데 그 사람이 어 그 그 그러니까 좀 이상해",
        "근데 그 사람이 어 그 그 그러니까 좀 이상해",
        id="unintelligible-tag-filler-repetition",
    ),
    pytest.param(
        "나는 (70%)/(칠십 퍼센트) 정도는 했어 *",
        "나는 70% 정도는 했어",
        "나는 칠십 퍼센트 정도는 했어",
        id="percent-dual-and-trailing-star",
    ),
    pytest.param(
        "뭐 그냥 #하 그런 거지.",
        "뭐 그냥 하 그런 거지.",
        "뭐 그냥 하 그런 거지.",
        id="rare-word-prefix",
    ),
    pytest.param(
        "아 진짜? 그래 음/ 알겠어.",
        "아 진짜? 그래 음 알겠어.",
        "아 진짜? 그래 음 알겠어.",
        id="punctuation-kept-filler",
    ),
    pytest.param(
        "(3시)/(세 시)에 (KBS)/(케이 비 에스) 뉴스 봐",
        "3시에 KBS 뉴스 봐",
        "세 시에 케이 비 에스 뉴스 봐",
        id="two-duals-in-one-line",
    ),
    pytest.param(
        "(2019년 3월)/(이천십구 년 삼 월)에 (SNS)/(에스 엔 에스) 시작했어",
        "2019년 3월에 SNS 시작했어",
        "이천십구 년 삼 월에 에스 엔 에스 시작했어",
        id="dual-with-spaces-inside-each-side",
    ),
    pytest.param(
        "(SNS)/ (에스 엔 에스) 안 해",
        "SNS 안 해",
        "에스 엔 에스 안 해",
        id="dual-with-space-after-slash",
    ),
    pytest.param(
        "그+ 그/ 그러니까 그/+ 그거",
        "그 그 그러니까 그 그거",
        "그 그 그러니까 그 그거",
        id="filler-and-repetition-combined",
    ),
    pytest.param("b/ n/", "", "", id="only-tags-is-empty"),
    pytest.param("b/n/ o/", "", "", id="glued-tags-is-empty"),
    pytest.param("*", "", "", id="star-alone-is-empty"),
    pytest.param("l/ . n/", "", "", id="only-tags-and-punctuation-is-empty"),
    pytest.param("", "", "", id="empty-input"),
    pytest.param("그 * 거기 가", "그 거기 가", "그 거기 가", id="star-between-words"),
    pytest.param(
        "o/ iPhone이랑 Bluetooth menu 다 돼 n/",
        "iPhone이랑 Bluetooth menu 다 돼",
        "iPhone이랑 Bluetooth menu 다 돼",
        id="latin-words-with-n-u-b-l-o-survive",
    ),
    pytest.param(
        "pun이랑 fun/ 그리고 url USB GPS blog",
        "pun이랑 fun 그리고 url USB GPS blog",
        "pun이랑 fun 그리고 url USB GPS blog",
        id="latin-word-ending-in-n-with-filler-slash",
    ),
    pytest.param(
        "거야?o/ 응 그래, l/ 알았어.n/",
        "거야? 응 그래, 알았어.",
        "거야? 응 그래, 알았어.",
        id="tags-glued-to-punctuation",
    ),
    pytest.param(
        "아/\t 그래  \n 알았어 ",
        "아 그래 알았어",
        "아 그래 알았어",
        id="tabs-newlines-and-spaces-collapsed",
    ),
    pytest.param(
        "((70)/(칠십))% 정도",
        "70% 정도",
        "칠십% 정도",
        id="nested-parens-around-dual",
    ),
    pytest.param(
        "(그러니까 말이야 그래) 알았어",
        "그러니까 말이야 그래 알았어",
        "그러니까 말이야 그래 알았어",
        id="parens-without-dual-dropped",
    ),
    pytest.param(
        "그래서 (1시)/(한 시 알았어",
        "그래서 1시 한 시 알았어",
        "그래서 1시 한 시 알았어",
        id="unclosed-second-side-keeps-text",
    ),
    pytest.param(
        "(C++)/(씨 플러스 플러스)랑 (C#)/(씨샵) 배워",
        "C++랑 C# 배워",
        "씨 플러스 플러스랑 씨샵 배워",
        id="symbols-inside-spelling-side-kept",
    ),
    pytest.param(
        "(A/S)/(에이/ 에스+) 맡겼어",
        "A/S 맡겼어",
        "에이 에스 맡겼어",
        id="notation-inside-pronunciation-side-removed",
    ),
    pytest.param(
        "어/그 사람 K-pop 좋아해",
        "어 그 사람 K-pop 좋아해",
        "어 그 사람 K-pop 좋아해",
        id="slash-between-words-becomes-space-hyphen-kept",
    ),
    # Marks inside a spelling side: notation after Hangul, text after Latin letters and symbols.
    pytest.param(
        "(아/ 그러니까)/(아/ 그러니까) 내가 (A/S)/(에이 에스) 맡겼어",
        "아 그러니까 내가 A/S 맡겼어",
        "아 그러니까 내가 에이 에스 맡겼어",
        id="filler-inside-both-sides-removed-slash-after-latin-kept",
    ),
    pytest.param(
        "(그+ 그 사람)/(그+ 그 사람)이 (C++)/(씨 플플) 배워",
        "그 그 사람이 C++ 배워",
        "그 그 사람이 씨 플플 배워",
        id="repetition-inside-both-sides-removed-plus-after-latin-kept",
    ),
    pytest.param(
        "(b/ 3시)/(b/ 세 시)에 (C#)/(씨샵)이랑 (A+)/(에이 플러스) 받았어",
        "3시에 C#이랑 A+ 받았어",
        "세 시에 씨샵이랑 에이 플러스 받았어",
        id="noise-tag-inside-sides-removed-symbols-after-latin-kept",
    ),
    pytest.param(
        "(어/그 KBS)/(어/그 케이비에스)랑 (뭐*)/(뭐*) (그/+ 그)/(그/+ 그)",
        "어 그 KBS랑 뭐 그 그",
        "어 그 케이비에스랑 뭐 그 그",
        id="slash-between-hangul-star-and-combined-marks-inside-sides",
    ),
    pytest.param(
        "(5*3)/(오 곱하기 삼)은 (#그거)/(그거)야",
        "5*3은 그거야",
        "오 곱하기 삼은 그거야",
        id="star-between-digits-kept-rare-prefix-before-hangul-removed",
    ),
    pytest.param(
        "(그렇게)/(그러케) 하면 #KBS 나와",
        "그렇게 하면 KBS 나와",
        "그러케 하면 KBS 나와",
        id="hangul-dual-and-rare-acronym",
    ),
]


@pytest.mark.parametrize(("text", "spelling", "phonetic"), BOTH_MODES)
def test_normalize_spelling(text: str, spelling: str, phonetic: str) -> None:
    assert normalize_transcript(text, "spelling") == spelling


@pytest.mark.parametrize(("text", "spelling", "phonetic"), BOTH_MODES)
def test_normalize_phonetic(text: str, spelling: str, phonetic: str) -> None:
    assert normalize_transcript(text, "phonetic") == phonetic


@pytest.mark.parametrize(("text", "spelling", "phonetic"), BOTH_MODES)
def test_normalize_sides_is_both_modes_from_one_parse(
    text: str, spelling: str, phonetic: str
) -> None:
    # The phonetic form is kept only where it differs: a line without a dual part has none.
    expected = TranscriptSides(spelling, "" if phonetic == spelling else phonetic)
    assert normalize_sides(text) == expected


def test_normalize_sides_differ_only_inside_the_dual_part() -> None:
    sides = normalize_sides("b/ 어/ 내일 (3시)/(세 시)에 만나 n/")
    assert sides == TranscriptSides("어 내일 3시에 만나", "어 내일 세 시에 만나")
    assert normalize_sides("(그렇게)/(그렇게) 해") == TranscriptSides("그렇게 해", "")


def test_normalize_default_mode_is_spelling() -> None:
    assert normalize_transcript("b/ (1시)/(한 시)에 가") == "1시에 가"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "o/ 그래서  지금 (1시)/(한 시)에\t가는 거야? ",
            "o/ 그래서 지금 (1시)/(한 시)에 가는 거야?",
            id="notation-kept-whitespace-collapsed",
        ),
        pytest.param("b/ n/", "b/ n/", id="tags-kept"),
        pytest.param(" 그+ 그/ #하 * ", "그+ 그/ #하 *", id="marks-kept"),
        pytest.param(" \t\n", "", id="whitespace-only"),
    ],
)
def test_normalize_raw(text: str, expected: str) -> None:
    assert normalize_transcript(text, "raw") == expected


def test_normalize_unknown_mode_names_the_choices() -> None:
    with pytest.raises(ValueError, match="spelling, phonetic, raw"):
        normalize_transcript("안녕", "numeric")  # type: ignore[arg-type]


def test_parse_trn_line_good() -> None:
    line = "KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm :: o/ 그래서 (1시)/(한 시)에?\n"
    assert parse_trn_line(line, "train.trn", 1) == TrnLine(
        audio_path="KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm",
        transcript="o/ 그래서 (1시)/(한 시)에?",
        line_no=1,
    )


def test_parse_trn_line_strips_bom_and_crlf() -> None:
    line = "\ufeffKsponSpeech_05/KsponSpeech_0621/KsponSpeech_620001.pcm ::  네 알겠어요. \r\n"
    result = parse_trn_line(line, Path("dev.trn"), 1)
    assert result.audio_path == "KsponSpeech_05/KsponSpeech_0621/KsponSpeech_620001.pcm"
    assert result.transcript == "네 알겠어요."


def test_parse_trn_line_empty_transcript_is_not_an_error() -> None:
    result = parse_trn_line("KsponSpeech_E00001.pcm :: \n", "eval_clean.trn", 4)
    assert result == TrnLine(audio_path="KsponSpeech_E00001.pcm", transcript="", line_no=4)


def test_parse_trn_line_missing_separator() -> None:
    with pytest.raises(DataError) as excinfo:
        parse_trn_line("KsponSpeech_000001.pcm 그래서 지금\n", Path("/data/train.trn"), 7)
    message = str(excinfo.value)
    assert message.startswith("/data/train.trn:7: ")
    assert "' :: '" in message
    assert "expected 'KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm :: " in message


def test_parse_trn_line_empty_path() -> None:
    with pytest.raises(DataError) as excinfo:
        parse_trn_line("  :: 그래서 지금\n", "train.trn", 3)
    message = str(excinfo.value)
    assert message.startswith("train.trn:3: ")
    assert "empty audio path" in message
    assert "expected '" in message


def test_read_cp949_transcript(tmp_path: Path) -> None:
    path = tmp_path / "KsponSpeech_000001.txt"
    path.write_bytes("o/ 그래서 지금 (1시)/(한 시)에 가는 거야?\n".encode("cp949"))
    assert read_cp949_transcript(path) == "o/ 그래서 지금 (1시)/(한 시)에 가는 거야?"


def test_read_cp949_transcript_resaved_as_utf8(tmp_path: Path) -> None:
    # UTF-8 "몰라" is also valid CP949 (as "紐곕씪"): the reader must not take that reading.
    assert "몰라".encode().decode("cp949") != "몰라"
    path = tmp_path / "KsponSpeech_000002.txt"
    path.write_bytes("\ufeff몰라 \r\n".encode())
    assert read_cp949_transcript(path) == "몰라"


def test_read_cp949_transcript_undecodable(tmp_path: Path) -> None:
    data = b"\xff\xfe\xfa"
    for encoding in ("cp949", "utf-8"):
        with pytest.raises(UnicodeDecodeError):
            data.decode(encoding)
    path = tmp_path / "KsponSpeech_000003.txt"
    path.write_bytes(data)
    with pytest.raises(DataError, match="KsponSpeech_000003.txt.*neither CP949 nor UTF-8"):
        read_cp949_transcript(path)


def test_read_cp949_transcript_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "KsponSpeech_999999.txt"
    with pytest.raises(DataError, match="KsponSpeech_999999.txt: cannot read transcript"):
        read_cp949_transcript(path)
