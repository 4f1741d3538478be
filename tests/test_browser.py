"""The browser client (balancer/static/index.html) in headless Chromium: its
microphone is a WAV file, its frames go through the real system."""
from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from cluster import REPO, wait_until
from voicestream.logline import parse_line

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.integration
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="headless browser test needs Debian's chromium and chromium-driver "
                                          "(.ci/run installs them: apt-get install chromium chromium-driver)")


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 # The fake microphone plays this file in a loop.
                 f"--use-file-for-fake-audio-capture={REPO / 'data' / 'us_female_16k.wav'}",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


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
    account = browser.find_element(By.ID, "account")
    account.clear()
    account.send_keys("browsermic")
    browser.find_element(By.ID, "mic").click()
    # The file holds ~11 s of speech with 1 s pauses, so 50 frames have both.
    wait_until(lambda: len(system.account_log("browsermic")) >= 50, 60, "50 frames from the browser")
    browser.find_element(By.ID, "stop").click()
    parsed = [parse_line(line) for line in system.account_log("browsermic")]
    assert None not in parsed, "every line in the contract format"
    voices = [fields.voice for fields in parsed if fields is not None]
    assert 0 < sum(voices) < len(voices), "speech and pauses both seen"
    assert "voice=" in browser.find_element(By.ID, "summary").text
