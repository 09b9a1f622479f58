"""A real browser on the real spawn page (headless Debian Chromium driven by Selenium).

With the local demo config (jupyterhub_config/local.py, LocalRaySpawner): log in, open
the spawn form, pick the Ray profile with an unlisted worker count over the admin's
limit → the error is shown on the page and nothing starts; then pick a listed choice →
the progress page shows the Ray cluster coming up → the browser lands on the started
server. Screenshots go to artifacts/ (spawn-form.png, spawn-error.png, spawn-progress.png).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest


selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver"),
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="rs-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1200,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def fill_ray_form(driver, workers: str, unlisted: str | None = None) -> None:
    driver.find_element(By.ID, "profile-item-ray").click()
    select = Select(driver.find_element(By.ID, "profile-option-ray--workers"))
    if unlisted is None:
        select.select_by_value(workers)
    else:
        select.select_by_value("unlisted-choice")
        box = driver.find_element(By.ID, "profile-option-ray--workers--unlisted-choice")
        box.clear()
        box.send_keys(unlisted)


def submit(driver) -> None:
    driver.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]").click()


def test_spawn_page_in_a_real_browser(hub, browser):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    wait = WebDriverWait(browser, 60)
    browser.get(hub.url + "/hub/login")
    browser.find_element(By.ID, "username_input").send_keys("carol")
    browser.find_element(By.ID, "password_input").send_keys("e2e-password")
    browser.find_element(By.ID, "login_submit").click()
    wait.until(lambda d: "/hub/login" not in d.current_url)

    browser.get(hub.url + "/hub/spawn")
    wait.until(lambda d: d.find_elements(By.ID, "profile-item-ray"))
    assert "Ray: small CPU cluster" in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "spawn-form.png"))

    # a value the form's regex accepts but the admin's limit does not: refused on the page
    fill_ray_form(browser, "", unlisted="9")
    submit(browser)
    wait.until(lambda d: "limit is 4" in d.page_source)
    browser.save_screenshot(str(ARTIFACTS / "spawn-error.png"))
    assert "9 workers requested; the limit is 4 per cluster." in browser.page_source
    user = hub.api("GET", "/users/carol").json()
    assert not user["servers"], user  # nothing started

    browser.get(hub.url + "/hub/spawn")
    wait.until(lambda d: d.find_elements(By.ID, "profile-item-ray"))
    fill_ray_form(browser, "0")  # head only: gentle on a 2-core machine
    submit(browser)
    seen: list[str] = []
    deadline = time.monotonic() + 420
    while "/user/carol/" not in browser.current_url:
        assert time.monotonic() < deadline, f"never landed on the server; progress seen: {seen}\n{hub.log_tail()}"
        for el in browser.find_elements(By.CSS_SELECTOR, ".progress-log-event, #progress-message"):
            try:
                text = el.text.strip()
            except Exception:  # the page moved on
                continue
            if text and text not in seen:
                seen.append(text)
                if "Ray cluster" in text and not (ARTIFACTS / "spawn-progress.png").exists():
                    browser.save_screenshot(str(ARTIFACTS / "spawn-progress.png"))
        time.sleep(0.5)
    assert any("Ray cluster ray-carol" in t for t in seen), seen
    server = hub.api("GET", "/users/carol").json()["servers"][""]
    assert server["ready"] and server["user_options"]["profile"] == "ray"
    assert hub.api("DELETE", "/users/carol/server").status_code in (202, 204)
