#!/usr/bin/env python3
"""The web page of polysketch serve in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium (python3-selenium), over loopback, bounded in time.
Usage: browser_test.py POLYSKETCH_BINARY [SCREENSHOT.png]

The page loads and names the model; a prompt streams its answer into the page (the text the API
gives for the same request); in a session, Regenerate rolls the session back and replaces the
answer (greedy: the same answer, the session at the same position, not the answer twice); the
session list shows the session and fork adds one."""
import os
import socket
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_harness import Server, check, die_with_parent, failures, free_port, tiny_model  # noqa: E402

BIN = sys.argv[1]
SCREENSHOT = sys.argv[2] if len(sys.argv) > 2 else None
TMP = tempfile.mkdtemp()

server = Server(BIN, tiny_model(BIN, TMP))
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900",
             f"--user-data-dir={TMP}/chromium"):
    options.add_argument(flag)
# chromedriver on a port of our own, reached at 127.0.0.1: Selenium's own Service would poll it at
# "localhost", which a machine without /etc/hosts (a bare chroot) cannot resolve.
port = free_port()
chromedriver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={port}", "--allowed-ips=127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        break
    except OSError:
        time.sleep(0.1)
driver = webdriver.Remote(command_executor=f"http://127.0.0.1:{port}", options=options)
driver.set_page_load_timeout(30)
try:
    driver.get(f"http://127.0.0.1:{server.port}/")
    wait = WebDriverWait(driver, 30)
    check(driver.title == "polysketch serve", f"page title {driver.title!r}")
    wait.until(lambda d: d.find_element(By.ID, "model").text != "")
    check("polysketch" in driver.find_element(By.ID, "model").text, "the page names the model and mechanism")

    def field(name, value):
        e = driver.find_element(By.ID, name)
        e.clear()
        e.send_keys(value)

    def generate(button):
        driver.execute_script("document.getElementById('stats').dataset.done = ''")
        driver.find_element(By.ID, button).click()
        wait.until(lambda d: d.find_element(By.ID, "stats").get_attribute("data-done") == "yes")
        return driver.find_element(By.ID, "out").text

    prompt = "And God said"
    field("prompt", prompt)
    field("max", "20")
    field("temp", "0")
    field("session", "web")
    text = generate("go")
    st, api, _ = server.post("/v1/completions", {"prompt": prompt, "max_tokens": 20, "temperature": 0})
    check(text == (prompt + api["choices"][0]["text"]).strip(), f"streamed into the page: {text!r} vs the API's")
    stats = driver.find_element(By.ID, "stats").text
    check("tokens/s" in stats and "session web" in stats and "MiB" in stats, f"stats line {stats!r}")
    position = server.call("GET", "/v1/sessions/web", None)[1]["position"]
    again = generate("again")
    check(again == text, f"regenerate replaces the answer: {again!r} vs {text!r}")
    check(server.call("GET", "/v1/sessions/web", None)[1]["position"] == position,
          "regenerate rolled the session back first (same position)")
    items = driver.find_elements(By.CSS_SELECTOR, "#sessions li")
    check(any(li.get_attribute("data-id") == "web" for li in items), "the session is listed")
    fork = [b for b in items[0].find_elements(By.TAG_NAME, "button") if b.text == "fork"]
    check(len(fork) == 1, "a fork button")
    if fork:
        fork[0].click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sessions li")) == 2)
        check(len(server.call("GET", "/v1/sessions", None)[1]["data"]) == 2, "fork made a session")
    if SCREENSHOT:
        driver.save_screenshot(SCREENSHOT)
finally:
    driver.quit()
    chromedriver.terminate()
    chromedriver.wait(10)
    server.stop()

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("browser: all checks passed")
