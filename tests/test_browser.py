"""A real browser on the real hub pages (headless Debian Chromium driven by Selenium).

One local-mode hub (jupyterhub_config/local.py, LocalRaySpawner, plus rayspawner's page
templates) and one browser for the module; the tests run in order as one user would:

1. the spawn form shows the admin's limit on the free-entry worker field, and the
   browser refuses 12 with a message naming it;
2. a value the server refuses (the browser's check bypassed, as any client may) comes
   back on the form with the error at the top and the profile and choices kept;
3. a Ray spawn: the progress page shows the steps, the browser lands on the server;
   the home page lists the cluster, its size and a working dashboard link; Stop asks
   for confirmation first (dismissed: still running; accepted: stopped).

Only step 3 boots Ray (a head only). Screenshots go to artifacts/: spawn-form-limit.png,
spawn-error.png, spawn-progress-N.png, home.png.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from . import local_hub

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
)
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
USER = "carol"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The demo's own config (which enables rayspawner's home page)."""
    h = local_hub.start_hub(tmp_path_factory.mktemp("browser-hub"))
    try:
        yield h
    finally:
        left = h.stop()
        assert not left, f"Ray processes left after the hub stopped: {left}"


@pytest.fixture(scope="module")
def browser(hub):
    profile = tempfile.mkdtemp(prefix="rs-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1200,1400",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    try:
        driver.get(hub.url + "/hub/login")
        driver.find_element(By.ID, "username_input").send_keys(USER)
        driver.find_element(By.ID, "password_input").send_keys("e2e-password")
        driver.find_element(By.ID, "login_submit").click()
        WebDriverWait(driver, 60).until(lambda d: "/hub/login" not in d.current_url)
        ARTIFACTS.mkdir(exist_ok=True)
        for old in ARTIFACTS.glob("spawn-progress-*.png"):
            old.unlink()  # this run's steps only
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def goto(driver, url: str, timeout: float = 60) -> None:
    """Navigate to ``url`` and wait until the browser is there. A navigation started while the
    page is still following redirects (landing on the server: /user/… → oauth → lab) can be
    dropped: the browser then stays where it was, so it is asked again."""
    deadline = time.monotonic() + timeout
    while True:
        driver.get(url)
        try:
            WebDriverWait(driver, 5).until(
                lambda d: (
                    d.current_url.split("?")[0] == url.split("?")[0]
                    and d.execute_script("return document.readyState") == "complete"
                )
            )
            return
        except TimeoutException:
            assert time.monotonic() < deadline, f"the browser never got to {url} (at {driver.current_url})"


def open_form(driver, hub) -> None:
    driver.get(hub.url + "/hub/spawn")
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "profile-item-ray"))


def workers_select(driver) -> Select:
    return Select(driver.find_element(By.ID, "profile-option-ray--workers"))


def other_workers(driver):
    return driver.find_element(By.ID, "profile-option-ray--workers--unlisted-choice")


def click(driver, element) -> None:
    """Click as a user would: scrolled into view first (long profile descriptions push the
    form's lower elements below the fold, where Chromium refuses the click)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def fill_ray_form(driver, workers: str = "", unlisted: str | None = None, size: str | None = None) -> None:
    click(driver, driver.find_element(By.ID, "profile-item-ray"))
    if unlisted is None:
        workers_select(driver).select_by_value(workers)
    else:
        workers_select(driver).select_by_value("unlisted-choice")
        box = other_workers(driver)
        box.clear()
        box.send_keys(unlisted)
    if size:
        Select(driver.find_element(By.ID, "profile-option-ray--worker_size")).select_by_value(size)


def submit(driver) -> None:
    click(driver, driver.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]"))


def servers(hub) -> dict:
    return hub.api("GET", f"/users/{USER}").json()["servers"]


def test_the_form_shows_the_limit(hub, browser):
    open_form(browser, hub)
    assert "Ray: small CPU cluster" in browser.page_source
    fill_ray_form(browser, unlisted="12")
    label = browser.find_element(By.CSS_SELECTOR, "label[for=profile-option-ray--workers--unlisted-choice]")
    assert "(0–4)" in label.text, label.text  # ray_max_workers = 4 in jupyterhub_config/profiles.py
    box = other_workers(browser)
    message = browser.execute_script("return arguments[0].validationMessage", box)
    assert message == "A whole number of workers. Allowed: 0 to 4 (the admin's limit).", message
    browser.save_screenshot(str(ARTIFACTS / "spawn-form-limit.png"))
    submit(browser)  # the browser refuses it: no request, no server
    time.sleep(1)
    assert browser.current_url.endswith("/hub/spawn") and not servers(hub)
    box = other_workers(browser)
    box.clear()
    box.send_keys("3")
    assert browser.execute_script("return arguments[0].checkValidity()", box)
    # a leftover out-of-range value in the hidden field does not block a listed choice
    box.clear()
    box.send_keys("12")
    workers_select(browser).select_by_value("1")
    assert browser.execute_script("return document.getElementById('spawn_form').checkValidity()")


def test_a_refused_spawn_keeps_the_choices(hub, browser):
    open_form(browser, hub)
    fill_ray_form(browser, unlisted="9", size="medium")
    # the server is the authority: a client that skips the form's check reaches its limit check
    browser.execute_script("document.getElementById('spawn_form').noValidate = true")
    submit(browser)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".spawn-error-msg"))
    error = browser.find_element(By.CSS_SELECTOR, ".spawn-error-msg")
    assert "9 workers requested; the limit is 4 per cluster." in error.text
    form = browser.find_element(By.ID, "spawn_form")
    assert error.location["y"] < form.location["y"], "the message is above the form"
    browser.save_screenshot(str(ARTIFACTS / "spawn-error.png"))
    assert not servers(hub)  # nothing started

    def kept(d) -> None:
        assert d.find_element(By.ID, "profile-item-ray").is_selected(), "the Ray profile is still chosen"
        assert not d.find_element(By.ID, "profile-item-plain").is_selected()
        assert workers_select(d).first_selected_option.get_attribute("value") == "unlisted-choice"
        assert other_workers(d).is_displayed() and other_workers(d).get_attribute("value") == "9"
        size = Select(d.find_element(By.ID, "profile-option-ray--worker_size"))
        assert size.first_selected_option.get_attribute("value") == "medium"

    kept(browser)
    open_form(browser, hub)  # coming back to the form later: the same choices
    kept(browser)


def test_spawn_progress_home_page_and_stop(hub, browser):
    open_form(browser, hub)
    fill_ray_form(browser, "0")  # head only: gentle on a 2-core machine
    submit(browser)
    seen: list[str] = []
    deadline = time.monotonic() + 420
    while f"/user/{USER}/" not in browser.current_url:
        assert time.monotonic() < deadline, f"never landed on the server; progress seen: {seen}\n{hub.log_tail()}"
        # the event log open, so the screenshots show every step so far
        browser.execute_script("const d = document.getElementById('progress-details'); if (d) d.open = true;")
        for el in browser.find_elements(By.CSS_SELECTOR, ".progress-log-event, #progress-message"):
            try:
                text = el.text.strip()
            except StaleElementReferenceException:  # the page moved on
                continue
            if text and text not in seen:
                seen.append(text)
                if len(seen) <= 8:
                    browser.save_screenshot(str(ARTIFACTS / f"spawn-progress-{len(seen)}.png"))
        time.sleep(0.5)
    assert any("ray-carol" in t for t in seen) and len(seen) >= 3, seen  # the steps advance
    # landed: the server's redirects (→ oauth → JupyterLab) end on a loaded JupyterLab page
    WebDriverWait(browser, 120).until(
        lambda d: f"/user/{USER}/lab" in d.current_url and d.execute_script("return document.readyState") == "complete"
    )
    server = servers(hub)[""]
    assert server["ready"] and server["user_options"]["profile"] == "ray"

    # the home page: the cluster, its size, its dashboard
    goto(browser, hub.url + "/hub/home")
    row = WebDriverWait(browser, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, ".ray-cluster-row"))
    assert "ray-carol" in row.text and "head 1 CPU, 1 GiB · no workers" in row.text, row.text
    link = row.find_element(By.CSS_SELECTOR, "a.ray-dashboard-link").get_attribute("href")
    assert link == f"{hub.url}/user/{USER}/ray-dashboard/", link
    assert "Stopping a server deletes its Ray cluster" in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "home.png"))
    browser.get(link)
    try:
        WebDriverWait(browser, 120).until(lambda d: d.title.endswith("Ray Dashboard"))
    except Exception:
        pytest.fail(
            f"the dashboard link does not open the Ray dashboard: {browser.title!r}\n{browser.page_source[:800]}"
        )

    # Stop asks first; dismissed, nothing happens
    goto(browser, hub.url + "/hub/home")
    stop = WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "stop"))
    stop.click()
    alert = WebDriverWait(browser, 10).until(lambda d: d.switch_to.alert)
    assert "Ray cluster ray-carol will be deleted" in alert.text, alert.text
    alert.dismiss()
    time.sleep(2)
    assert servers(hub)[""]["ready"], "dismissing the confirmation must leave the server running"
    browser.find_element(By.ID, "stop").click()
    WebDriverWait(browser, 10).until(lambda d: d.switch_to.alert).accept()
    deadline = time.monotonic() + 120
    while "" in servers(hub):
        assert time.monotonic() < deadline, f"the server did not stop\n{hub.log_tail()}"
        time.sleep(0.5)
    try:
        browser.switch_to.alert.dismiss()
    except NoAlertPresentException:
        pass
