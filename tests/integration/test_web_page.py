"""The page at / of `pefty serve` in a real headless chromium, driven by Selenium.

A tiny random Whisper is served (its text is nonsense), so the checks are the mechanics: the page
shows the segments the API answers for the same file, a click on a segment moves the player to
its start, the SRT it downloads is the server's own SRT of that file, the header shows the round
and eval_clean CER of the workspace's records, a recording from Chrome's fake microphone is
transcribed, and a refused upload shows the server's reason.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import soundfile
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from test_serve import CONFIG, RATE, Server, httpx
from workspaces import write_audio, write_manifest

from pefty_whisper.cli import main
from pefty_whisper.workspace import MergeCheck, MergeRecord

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip(
        "chromium or chromedriver is missing (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install 'pefty-whisper[dev]'")
from selenium.webdriver.common.by import By  # noqa: E402 (after the skip: selenium may be absent)
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROUND = 3


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, restore_torch_threads: None) -> Path:
    """merged/tiny recorded as round 3 (the record, not the folder's name, says which round),
    evaluated on a two-utterance eval_clean by `pefty evaluate`, and a spoken sentence."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from pefty_whisper.demo.speech import Voice, synthesize

    work = tmp_path_factory.mktemp("web")
    model = save_tiny_whisper(work / "merged" / "tiny", seed=2)
    MergeRecord(
        round=ROUND,
        adapter_dir=work / "adapters" / f"round{ROUND}",
        base="merged/round2",
        base_dir=work / "merged" / "round2",
        base_hash="0" * 64,
        weights_hash="0" * 64,
        dtype="float32",
        merge_check=MergeCheck(max_abs_logit_diff=0.0, tolerance=1e-3),
        data=None,
        steps=None,
        best_validation=None,
        merged=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions={},
    ).write(model)
    (work / "pefty.yaml").write_text(CONFIG, encoding="utf-8")
    speech = synthesize("안녕하세요 오늘은 날씨가 좋습니다", Voice("ko", 150, 50))
    soundfile.write(work / "hello.wav", speech, RATE, subtype="PCM_16")
    rows = []
    for i, sentence in enumerate(["세 시에 만나요", "오늘 날씨가 좋네요"]):
        write_audio(work / "audio" / f"e{i}.pcm", seed=i)
        rows.append((str(work / "audio" / f"e{i}.pcm"), sentence))
    write_manifest(work / "data" / "eval_clean.csv", rows)
    argv = ["evaluate", "--set", "eval_clean", "--model", "merged/tiny", "--no-longform"]
    result = CliRunner().invoke(main, [*argv, "--workdir", str(work)])
    assert result.exit_code == 0, result.output
    assert (work / "eval" / f"round{ROUND}" / "eval_clean.json").is_file()
    return work


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[Server]:
    running = Server(workspace)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(workspace: Path, downloads: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--window-size=1280,900",
        "--autoplay-policy=no-user-gesture-required",
        # The microphone: allowed without a prompt, and it speaks hello.wav (looped).
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={workspace / 'hello.wav'}",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: webdriver.Chrome, condition, seconds: float = 90.0):
    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: condition(d))


def api(server: Server, path: Path, response_format: str):
    response = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": (path.name, path.read_bytes())},
        data={"response_format": response_format},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json() if response_format == "verbose_json" else response.text


def test_the_model_endpoint_reads_the_round_and_eval_clean_from_the_workspace(
    server: Server, workspace: Path
):
    summary = json.loads((workspace / "eval" / f"round{ROUND}" / "eval_clean.json").read_text())
    assert httpx.get(f"{server.url}/v1/pefty/model", timeout=10).json() == {
        "name": "tiny",
        "backend": "torch",
        "round": ROUND,
        "label": f"round{ROUND}",
        "eval_clean": {
            "cer": summary["cer"],
            "num_utterances": 2,
            "path": f"eval/round{ROUND}/eval_clean.json",
        },
    }
    page = httpx.get(f"{server.url}/", timeout=10)
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<html lang="ko">' in page.text
    script = httpx.get(f"{server.url}/web/page.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_upload_shows_the_segments_seeks_on_click_and_downloads_the_servers_srt(
    server: Server, workspace: Path, browser: webdriver.Chrome, downloads: Path
):
    audio = workspace / "hello.wav"
    expected = api(server, audio, "verbose_json")
    assert expected["segments"], "the tiny model must write a segment for this test to mean much"
    browser.get(f"{server.url}/")
    assert browser.execute_script("return document.characterSet") == "UTF-8"
    summary = json.loads((workspace / "eval" / f"round{ROUND}" / "eval_clean.json").read_text())
    wait(browser, lambda d: d.find_element(By.ID, "model-round").text == str(ROUND))
    assert browser.find_element(By.ID, "model-name").text == "tiny"
    assert browser.find_element(By.ID, "model-cer").text == f"{summary['cer']:.2f} % on 2 utt."

    browser.find_element(By.ID, "file").send_keys(str(audio))
    wait(browser, lambda d: d.find_element(By.ID, "result").is_displayed())
    assert not browser.find_element(By.ID, "error").is_displayed()
    items = browser.find_elements(By.CSS_SELECTOR, "#segments li.segment")
    shown = [
        (float(i.get_attribute("data-start")), i.find_element(By.CLASS_NAME, "text").text)
        for i in items
    ]
    assert shown == [(s["start"], s["text"].strip()) for s in expected["segments"]]
    assert browser.find_element(By.ID, "result-name").text == "hello.wav"

    # Move the player away from the last segment's start, then click the segment.
    player = browser.find_element(By.ID, "player")
    wait(browser, lambda d: d.execute_script("return arguments[0].readyState", player) >= 1)
    start = expected["segments"][-1]["start"]
    duration = browser.execute_script("return arguments[0].duration", player)
    away = duration - 0.1 if start < duration / 2 else 0.0
    browser.execute_script(
        "arguments[0].pause(); arguments[0].currentTime = arguments[1]", player, away
    )
    wait(
        browser,
        lambda d: abs(d.execute_script("return arguments[0].currentTime", player) - away) < 0.05,
    )
    items[-1].click()
    now = browser.execute_script("return arguments[0].currentTime", player)
    assert start - 0.01 <= now < start + 0.5, (start, away, now)

    browser.find_element(By.ID, "download-srt").click()
    srt = downloads / "hello.srt"
    wait(browser, lambda d: srt.is_file() and srt.stat().st_size > 0, 30)
    assert srt.read_text(encoding="utf-8") == api(server, audio, "srt")
    for segment in expected["segments"]:
        assert segment["text"] in srt.read_text(encoding="utf-8")


def test_a_recording_from_the_microphone_is_sent_as_wav_and_transcribed(
    server: Server, browser: webdriver.Chrome
):
    browser.get(f"{server.url}/")
    record = browser.find_element(By.ID, "record")
    record.click()
    wait(browser, lambda d: "recording" in record.get_attribute("class"), 10)
    time.sleep(2.5)
    record.click()
    wait(browser, lambda d: d.find_element(By.ID, "result").is_displayed())
    assert not browser.find_element(By.ID, "error").is_displayed()
    name = browser.find_element(By.ID, "result-name").text
    assert name.startswith("recording-") and name.endswith(".wav")
    duration = browser.execute_script("return document.getElementById('player').duration")
    assert 1.5 < duration < 5.0


def test_a_refused_upload_shows_the_servers_reason(
    server: Server, browser: webdriver.Chrome, tmp_path: Path
):
    notes = tmp_path / "notes.wav"
    notes.write_text("this is not audio at all", encoding="utf-8")
    browser.get(f"{server.url}/")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    error = browser.find_element(By.ID, "error")
    wait(browser, lambda d: error.is_displayed(), 30)
    assert "notes.wav: not a readable audio file" in error.text
    assert not browser.find_element(By.ID, "result").is_displayed()


# The server gives no words yet: the page's fetch is wrapped to add OpenAI's top-level `words`
# (two per segment, splitting its time) to the real answer, as a server with words would.
ADD_WORDS = """
const original = window.fetch;
window.fetch = async (url, init) => {
  const response = await original(url, init);
  if (!response.ok || !String(url).includes("/v1/audio/transcriptions")) return response;
  const body = await response.json();
  body.words = body.segments.flatMap((s) => {
    const middle = (s.start + s.end) / 2;
    return [
      { word: " 안녕", start: s.start, end: middle },
      { word: " 하세요", start: middle, end: s.end },
    ];
  });
  return new Response(JSON.stringify(body), { headers: { "content-type": "application/json" } });
};
"""


def test_words_where_the_server_gives_them_show_under_their_segment_and_seek(
    server: Server, workspace: Path, browser: webdriver.Chrome
):
    browser.get(f"{server.url}/")
    browser.execute_script(ADD_WORDS)
    browser.find_element(By.ID, "file").send_keys(str(workspace / "hello.wav"))
    wait(browser, lambda d: d.find_element(By.ID, "result").is_displayed())
    segments = browser.find_elements(By.CSS_SELECTOR, "#segments li.segment")
    for segment in segments:
        chips = segment.find_elements(By.CSS_SELECTOR, ".words .word")
        assert [c.text.split("\n")[0] for c in chips] == ["안녕", "하세요"]
    segment = segments[0]
    middle = (
        float(segment.get_attribute("data-start")) + float(segment.get_attribute("data-end"))
    ) / 2
    player = browser.find_element(By.ID, "player")
    wait(browser, lambda d: d.execute_script("return arguments[0].readyState", player) >= 1)
    segment.find_elements(By.CSS_SELECTOR, ".word")[1].click()
    now = browser.execute_script("return arguments[0].currentTime", player)
    assert middle - 0.01 <= now < middle + 0.5, (middle, now)
