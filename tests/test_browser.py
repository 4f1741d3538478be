"""The browser console (balancer/static/index.html, console.js, console.css)
in headless Chromium: its microphone is a WAV file of real speech, its frames
and REST calls go through the real system, under the page's
Content-Security-Policy."""
from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from speaker_helpers import call, ge2e_system, silence
from voicestream.logline import parse_line
from voicestream.segments import parse_segment
from voicestream.wav import encode_wav
from voicetools.cluster import System, wait_until
from voicetools.paths import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "console-test-token"
# Set to a path (docs/console.png) to save a screenshot of the console mid-stream.
SCREENSHOT = os.environ.get("CONSOLE_SCREENSHOT", "")

pytestmark = pytest.mark.integration
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="headless browser test needs Debian's chromium and chromium-driver "
                                          "(as root, scripts/system_packages.sh installs them)")


def fake_microphone_file(wav: Path, tmp_path: Path) -> Path:
    """wav as Chromium's fake audio capture reads it: 16-bit PCM WAV."""
    if sf.info(wav).subtype == "PCM_16":
        return wav
    samples, rate = sf.read(wav, dtype="int16")
    converted = tmp_path / f"{wav.stem}-pcm16.wav"
    sf.write(converted, samples, rate, subtype="PCM_16")
    return converted


@contextmanager
def chromium(microphone: Path) -> Iterator[Any]:
    """Headless Chromium whose microphone plays microphone in a loop."""
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={microphone}",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1100,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for failures
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser() -> Iterator[Any]:
    # ~11 s of speech with 1 s pauses (a file of the repo).
    with chromium(REPO / "data" / "us_female_16k.wav") as driver:
        yield driver


@pytest.fixture(scope="module")
def speaker_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Balancer (with a token) + three GE2E workers, encoders loaded."""
    with ge2e_system(tmp_path_factory.mktemp("console"), balancer_args=["--token", TOKEN]) as system:
        yield system


def longest_speaker_file(speakers_dir: Path) -> Path:
    return max(sorted(speakers_dir.glob("speaker_*/*.wav")), key=lambda path: sf.info(path).duration)


@pytest.fixture
def speaker_browser(speakers_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Chromium whose microphone plays one real speaker: the longest file of
    the set, so that enrollment and streaming both hear speech (the fake
    capture loops the file and starts it again for each capture)."""
    with chromium(fake_microphone_file(longest_speaker_file(speakers_dir), tmp_path)) as driver:
        yield driver


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float, what: str) -> Any:
    """Poll the page until condition(driver) is truthy; on timeout, fail with
    what the page says and what its console logged."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        texts = {id_: text_of(driver, id_) for id_ in ("health-status", "speakers-message", "status", "summary",
                                                       "speaker", "speaker-note")}
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; page: {texts}; "
                             f"console: {driver.get_log('browser')}") from None


def text_of(driver: Any, id_: str) -> str:
    from selenium.webdriver.common.by import By
    return str(driver.find_element(By.ID, id_).text)


def fill(driver: Any, id_: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    field = driver.find_element(By.ID, id_)
    field.clear()
    field.send_keys(value)


def listed(driver: Any) -> dict[str, list[str]]:
    """The speakers table: name -> its cells' texts (read in one script: the
    page replaces the rows whenever it lists the speakers again)."""
    return dict(driver.execute_script("""
        return [...document.querySelectorAll("#speakers tr[data-name]")].map(
            (row) => [row.dataset.name, [...row.cells].map((cell) => cell.textContent)]);"""))


def workers_up(driver: Any) -> int:
    from selenium.webdriver.common.by import By
    return len(driver.find_elements(By.CSS_SELECTOR, "#workers tr.up"))


def pixels_of_color(driver: Any, color: str) -> int:
    """How many pixels of the timeline canvas have exactly color (#rrggbb)."""
    return int(driver.execute_script("""
        const [r, g, b] = [1, 3, 5].map((i) => parseInt(arguments[0].slice(i, i + 2), 16));
        const canvas = document.getElementById("timeline");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] === r && data[i + 1] === g && data[i + 2] === b) n++;
        return n;""", color))


def drawn_segments(driver: Any) -> list[dict[str, str]]:
    """The final segments the page lists (newest first): each one's data-*
    fields and text, read in one script."""
    return list(driver.execute_script("""
        return [...document.querySelectorAll("#segments li.segment")].map(
            (item) => ({...item.dataset, text: item.textContent}));"""))


def listed_restarts(driver: Any) -> list[dict[str, str]]:
    return list(driver.execute_script("""
        return [...document.querySelectorAll("#segments li.restart")].map(
            (item) => ({...item.dataset, text: item.textContent}));"""))


def listed_closes(driver: Any) -> list[dict[str, str]]:
    return list(driver.execute_script("""
        return [...document.querySelectorAll("#segments li.closed")].map(
            (item) => ({...item.dataset, text: item.textContent, className: item.className}));"""))


def frame_shown(driver: Any) -> int:
    """The seq of the latest reply, as the page's summary shows it (0 before any)."""
    found = re.match(r"frame (\d+):", text_of(driver, "summary"))
    return int(found[1]) if found else 0


def final_up_to(driver: Any) -> int:
    """The last frame the final labels reached, as the page notes it (0 before any)."""
    found = re.search(r"final up to frame (\d+)", text_of(driver, "segments-note"))
    return int(found[1]) if found else 0


def current_worker(driver: Any) -> int | None:
    """The worker port of the latest reply, as the page's summary shows it."""
    found = re.search(r"worker (\d+)", text_of(driver, "summary"))
    return int(found[1]) if found else None


def page_problems(driver: Any) -> list[str]:
    """The errors the page's console logged about its own files or the
    policy: a blocked script, style or connection, or a file that did not
    load (not warnings: Chromium warns that ScriptProcessorNode is deprecated)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
            and re.search(r"Content.Security.Policy|console\.(js|css)", entry["message"], re.IGNORECASE)]


def styled(driver: Any) -> bool:
    """console.css applied: the voice light is a circle."""
    return driver.execute_script('return getComputedStyle(document.getElementById("light")).borderRadius') == "50%"


def test_the_page_is_served_to_browsers_and_json_to_others(system):
    request = urllib.request.Request(system.url + "/", headers={"Accept": "text/html"})
    with urllib.request.urlopen(request) as resp:
        assert resp.headers["Content-Type"].startswith("text/html") and b"ACCOUNTCODE" in resp.read()
    with urllib.request.urlopen(system.url + "/") as resp:
        assert json.load(resp)["websocket"] == "/ws"


@needs_browser
def test_microphone_frames_reach_the_account_log(system, browser):
    from selenium.webdriver.common.by import By

    browser.get(system.url + "/")
    fill(browser, "account", "browsermic")
    browser.find_element(By.ID, "mic").click()
    # The file holds ~11 s of speech with 1 s pauses, so 50 frames have both.
    wait_until(lambda: len(system.account_log("browsermic")) >= 50, 60, "50 frames from the browser")
    browser.find_element(By.ID, "stop").click()
    parsed = [parse_line(line) for line in system.account_log("browsermic")]
    assert None not in parsed, "every line in the contract format"
    voices = [fields.voice for fields in parsed if fields is not None]
    assert 0 < sum(voices) < len(voices), "speech and pauses both seen"
    assert "voice=" in browser.find_element(By.ID, "summary").text
    assert styled(browser) and page_problems(browser) == []


@needs_browser
def test_enroll_from_the_microphone_stream_and_see_the_name_then_delete_it(speaker_system, speaker_browser):
    from selenium.webdriver.common.by import By

    page, account, name = speaker_browser, "console", "ada"
    page.get(f"{speaker_system.url}/?token={TOKEN}&account={account}")
    wait_for(page, lambda d: workers_up(d) == 3, 30, "the status panel to show three workers up")
    wait_for(page, lambda d: "nobody is enrolled" in text_of(d, "speakers"), 30, "the empty speakers list")

    # Enroll: 8 s of the (fake) microphone, sent as a WAV to the REST API.
    fill(page, "speaker-name", name)
    fill(page, "enroll-seconds", "8")
    page.find_element(By.ID, "record").click()
    wait_for(page, lambda d: name in listed(d), 60, f"{name} in the speakers list after enrolling")
    assert f"enrolled {name}" in text_of(page, "speakers-message")
    speech_seconds, samples = listed(page)[name][1:3]
    assert float(speech_seconds) >= 3 and samples == "1", listed(page)

    # Stream the same voice: the worker names it.
    page.find_element(By.ID, "mic").click()
    wait_for(page, lambda d: text_of(d, "speaker") == name, 90, f"the current speaker to be {name}")
    legend_key = page.find_element(By.CSS_SELECTOR, f'#legend .key[data-name="{name}"]')
    color = legend_key.get_attribute("data-color")
    wait_for(page, lambda d: pixels_of_color(d, color) > 0, 30, f"{name}'s colour {color} in the timeline")
    # A final segment of the voice: listed with the name and its frames, as the
    # worker wrote it in the account's segments file.
    wait_for(page, lambda d: any(s["speaker"] == name for s in drawn_segments(d)), 60,
             f"a final segment of {name} in the segments list")
    segment = next(s for s in drawn_segments(page) if s["speaker"] == name)
    start_seq, end_seq = int(segment["startSeq"]), int(segment["endSeq"])
    assert 1 <= start_seq <= end_seq and int(segment["frames"]) == end_seq - start_seq + 1, segment
    assert segment["text"].startswith(name) and f"frames {start_seq}–{end_seq}" in segment["text"], segment
    written = [parse_segment(line) for line in
               (speaker_system.log_dir / f"{account}.segments.txt").read_text().splitlines()]
    assert any(w is not None and (w.speaker, w.start_seq, w.end_seq) == (name, start_seq, end_seq)
               for w in written), (segment, written)
    # The stream's first label was a speaker change: the page says since when.
    assert text_of(page, "speaker-change").startswith("since "), text_of(page, "speaker-change")
    if SCREENSHOT:
        # Some seconds of timeline make a better picture.
        wait_for(page, lambda d: text_of(d, "summary").startswith("frame ")
                 and int(text_of(d, "summary").split()[1].rstrip(":")) >= 200, 60, "200 frames streamed")
        page.set_window_size(1100, 1150)  # the whole page, the final segments' list too
        page.save_screenshot(SCREENSHOT)
    page.find_element(By.ID, "stop").click()
    wait_for(page, lambda d: "connection closed" in text_of(d, "status"), 30, "the stream to close")

    # Delete: two clicks (the first arms the button).
    button = page.find_element(By.CSS_SELECTOR, f'#speakers tr[data-name="{name}"] button.delete')
    button.click()
    button.click()
    wait_for(page, lambda d: name not in listed(d), 30, f"{name} gone from the speakers list")
    assert text_of(page, "speakers-message") == f"deleted {name}"
    reply = call(f"{speaker_system.url}/accounts/{account}/speakers?token={TOKEN}")
    assert reply.status == 200 and reply.body["speakers"] == [], reply
    # With the token on the page only: its style and script loaded without it,
    # and the policy let every fetch and the WebSocket through.
    assert styled(page) and page_problems(page) == []


@needs_browser
def test_stop_mid_speech_draws_the_segments_the_close_made_final(speaker_system, speaker_browser, speakers_dir,
                                                                 tmp_path):
    from selenium.webdriver.common.by import By

    page, account, name = speaker_browser, "consoleclose", "bea"
    voice = fake_microphone_file(longest_speaker_file(speakers_dir), tmp_path)
    reply = call(f"{speaker_system.url}/accounts/{account}/speakers/{name}?token={TOKEN}", "POST",
                 voice.read_bytes())
    assert reply.status == 201, reply
    page.get(f"{speaker_system.url}/?token={TOKEN}&account={account}")
    wait_for(page, lambda d: name in listed(d), 30, f"{name} in the speakers list")
    page.find_element(By.ID, "mic").click()
    wait_for(page, lambda d: drawn_segments(d), 90, "a first final segment")
    # Stop in speech: the voiced frames since the last final segment are
    # pending; CLOSE makes their labels final.
    wait_for(page, lambda d: d.find_element(By.ID, "light").get_attribute("class") == "on"
             and frame_shown(d) > final_up_to(d) + 3, 60, "speech not final yet")
    page.find_element(By.ID, "stop").click()
    # The answer comes before the balancer closes the socket.
    wait_for(page, lambda d: "connection closed" in text_of(d, "status"), 30, "the stream to close")
    [closed] = listed_closes(page)
    assert closed["className"] == "closed" and int(closed["segments"]) >= 1, closed
    newest = drawn_segments(page)[0]
    last = parse_segment((speaker_system.log_dir / f"{account}.segments.txt").read_text().splitlines()[-1])
    assert last is not None and (last.speaker, last.start_seq, last.end_seq) == (
        newest["speaker"], int(newest["startSeq"]), int(newest["endSeq"])), (last, newest)
    assert final_up_to(page) == last.end_seq


@needs_browser
def test_a_worker_that_takes_over_a_stream_shows_a_tracker_restart(vad_system, browser):
    """kill -9 the worker of a streaming account: the balancer moves the
    stream to the other worker, which has no state for it and says so in a
    tracker_restart event; the page lists it and marks the timeline."""
    from selenium.webdriver.common.by import By

    system = vad_system(n_workers=2)
    browser.get(system.url + "/")
    fill(browser, "account", "browserrestart")
    browser.find_element(By.ID, "mic").click()
    wait_for(browser, lambda d: current_worker(d) is not None, 30, "a first reply")
    serving = current_worker(browser)
    system.workers[system.worker_ports.index(serving)].kill()
    wait_for(browser, lambda d: listed_restarts(d), 60, "a tracker restart in the list")
    [restart] = listed_restarts(browser)
    assert int(restart["seq"]) > 1 and f"tracker restarted at frame {restart['seq']}" in restart["text"], restart
    assert current_worker(browser) not in (None, serving)
    assert pixels_of_color(browser, "#c2185b") > 0, "the restart's line on the timeline"
    browser.find_element(By.ID, "stop").click()
    assert page_problems(browser) == []


@needs_browser
def test_a_rejected_enrollment_shows_the_servers_error(speaker_system, speaker_browser, tmp_path):
    from selenium.webdriver.common.by import By

    quiet = tmp_path / "quiet.wav"
    quiet.write_bytes(encode_wav(silence(4), 16000))
    page = speaker_browser
    page.get(f"{speaker_system.url}/?token={TOKEN}&account=consolequiet")
    wait_for(page, lambda d: "nobody is enrolled" in text_of(d, "speakers"), 30, "the empty speakers list")
    fill(page, "speaker-name", "quiet")
    page.find_element(By.ID, "enroll-file").send_keys(str(quiet))

    def error_shown(driver: Any) -> bool:
        message = driver.find_element(By.ID, "speakers-message")
        return "error" in (message.get_attribute("class") or "") and "HTTP 422" in message.text
    wait_for(page, error_shown, 60, "the 422 in the speakers message")
    assert "needs at least 3 s of speech" in text_of(page, "speakers-message")
    assert listed(page) == {}
