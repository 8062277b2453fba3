"""The studio (/ui) in a real browser against a real `scoria serve` with the sample models.

Debian's chromium runs headless through /usr/bin/chromedriver (selenium); every page is
driven as a person would: clicks, typing, reading what is shown.
"""

import json
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import (DIGIT_ZERO, HOSTILE_DESCRIPTION, HOSTILE_TAG_KEY, HOSTILE_TAG_VALUE,
                      bench, http, make_workspace, start)

WAIT_S = 30


def wait(driver, what, condition, timeout=WAIT_S):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: condition(d))
    except TimeoutException:
        shot = Path(tempfile.gettempdir()) / "scoria-ui-failure.png"
        driver.save_screenshot(str(shot))
        logs = [e["message"] for e in driver.get_log("browser")]
        pytest.fail(f"timed out waiting for {what} (screenshot {shot}); console: {logs}",
                    pytrace=False)


def rows(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#models-table tbody tr")


def row(driver, model):
    found = driver.find_elements(By.CSS_SELECTOR, f'#models-table tbody tr[data-model="{model}"]')
    return found[0] if found else None


def state_of(driver, model):
    r = row(driver, model)
    return r.get_attribute("data-state") if r is not None else None


def click(driver, what, css):
    """Clicks the element `css` names, finding it again if the page re-rendered it."""
    def attempt(d):
        found = d.find_elements(By.CSS_SELECTOR, css)
        if not found:
            return False
        found[0].click()
        return True
    wait(driver, what, attempt)


def go(driver, url, page):
    driver.get(f"{url}/ui#/{page}")
    wait(driver, f"page {page}", lambda d: d.execute_script(
        "return document.body.dataset.page") == page)


@pytest.fixture(scope="module")
def workspace():
    with tempfile.TemporaryDirectory(prefix="scoria-ui-") as tmp:
        ws = make_workspace(tmp)
        # Two runs to list and compare, and a run folder that does not read back.
        bench(ws, "--model", "digits")
        bench(ws, "--model", "digits", "--concurrency", "2")
        broken = ws / "runs" / "20000101T000000.000Z-broken"
        broken.mkdir()
        (broken / "results.json").write_text("{ not json")
        yield ws


@pytest.fixture(scope="module")
def server(workspace):
    # broken/ fails to load on purpose: readiness must not wait for it.
    srv = start(workspace, "--strict-readiness=false")
    try:
        yield srv
    finally:
        srv.stop()


def test_browsers_at_root_land_on_the_studio_and_models_are_listed(server, browser, artifacts):
    d = browser.driver
    d.get(f"{server.url}/")
    wait(d, "the redirect to /ui", lambda d: urlsplit(d.current_url).path == "/ui")
    wait(d, "the models table", lambda d: len(rows(d)) >= 5)
    for model in ("digits", "lenet", "resnet", "hostile"):
        assert state_of(d, model) == "READY", (model, row(d, model).text)
    broken = row(d, "broken")
    assert broken.get_attribute("data-state") == "UNAVAILABLE"
    reason = broken.find_element(By.CSS_SELECTOR, ".reason").text
    assert "max_batch_sise" in reason, reason
    # Probes that do not ask for HTML still read Healthy.
    assert http(f"{server.url}/") == (200, "Healthy")
    # A model's details: versions, tensors, config, the hook's source (read-only).
    click(d, "digits", '#models-table tr[data-model="digits"]')
    detail = wait(d, "digits' details", lambda d: d.find_elements(
        By.CSS_SELECTOR, '#model-detail [data-detail="digits"]'))[0]
    text = detail.text
    for expected in ("Version 1", "input", "FP32", "[-1, 64]", "probabilities", "label",
                     "sklearn-digits", "score.rhai"):
        assert expected in text, (expected, text)
    hook = detail.find_element(By.CSS_SELECTOR, "pre.hook-source").text
    assert "fn run(" in hook
    d.save_screenshot(str(artifacts / "models.png"))


def test_markup_in_descriptions_and_tags_is_shown_as_text(server, browser):
    d = browser.driver
    go(d, server.url, "models")
    wait(d, "the hostile model", lambda d: row(d, "hostile") is not None)
    r = row(d, "hostile")
    tag = r.find_element(By.CSS_SELECTOR, ".tag").text
    assert tag == f"{HOSTILE_TAG_KEY}={HOSTILE_TAG_VALUE}", tag
    assert HOSTILE_DESCRIPTION in r.text
    click(d, "hostile", '#models-table tr[data-model="hostile"]')
    wait(d, "hostile's details", lambda d: d.find_elements(
        By.CSS_SELECTOR, '#model-detail [data-detail="hostile"]'))
    assert d.execute_script("return window.__pwned") is None
    assert d.find_elements(By.CSS_SELECTOR, "main img, main script") == []


def test_try_it_scores_the_readme_sample_and_builds_valid_examples(server, browser, artifacts):
    d = browser.driver
    go(d, server.url, "try")
    wait(d, "ready models in the form", lambda d: "digits" in [
        o.get_attribute("value") for o in d.find_elements(By.CSS_SELECTOR, "#try-model option")])
    Select(d.find_element(By.ID, "try-model")).select_by_value("digits")

    def send(body_js=None):
        d.execute_script("document.getElementById('try-response').removeAttribute('data-status')")
        if body_js is not None:
            d.execute_script("document.getElementById('try-body').value = arguments[0]", body_js)
        d.find_element(By.ID, "try-send").click()
        status = wait(d, "the response", lambda d: d.find_element(
            By.ID, "try-response").get_attribute("data-status"))
        return int(status), json.loads(d.find_element(By.ID, "try-response").text)

    # Through the score hook with the README's sample: label 0.
    Select(d.find_element(By.ID, "try-route")).select_by_value("score")
    status, answer = send(json.dumps({"data": [DIGIT_ZERO]}))
    assert status == 200, answer
    assert answer["predictions"][0]["label"] == "0", answer
    assert d.find_element(By.ID, "try-latency").text.endswith(" ms")
    d.save_screenshot(str(artifacts / "try.png"))
    # v2 JSON with the README's sample.
    Select(d.find_element(By.ID, "try-route")).select_by_value("v2")
    status, answer = send(json.dumps({"inputs": [
        {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": DIGIT_ZERO}]}))
    assert status == 200, answer
    label = [o for o in answer["outputs"] if o["name"] == "label"][0]
    assert label["data"] == [0], answer
    # The prefilled examples (built from the metadata) are valid requests, on both routes.
    for model in ("digits", "lenet"):
        Select(d.find_element(By.ID, "try-model")).select_by_value(model)
        for route in ("v2", "score"):
            d.execute_script("document.getElementById('try-body').value = ''")
            Select(d.find_element(By.ID, "try-route")).select_by_value(route)
            d.find_element(By.ID, "try-example").click()
            wait(d, f"the {route} example for {model}", lambda d: d.find_element(
                By.ID, "try-body").get_attribute("value"))
            status, answer = send()
            assert status == 200, (model, route, answer)
    # An error is shown with its status.
    status, answer = send("{not json")
    assert status == 400 and "error" in answer


def test_unload_and_load_from_the_page(server, browser):
    d = browser.driver
    go(d, server.url, "models")
    wait(d, "lenet ready", lambda d: state_of(d, "lenet") == "READY")
    assert http(f"{server.url}/v2/models/lenet/versions/1/ready")[0] == 200
    click(d, "unload", '#models-table [data-action="unload"][data-model="lenet"]')
    wait(d, "lenet unloaded on the page", lambda d: state_of(d, "lenet") == "UNLOADED")
    status, body = http(f"{server.url}/v2/models/lenet/versions/1/ready")
    assert status == 503, body
    click(d, "load", '#models-table [data-action="load"][data-model="lenet"]')
    wait(d, "lenet loaded again", lambda d: state_of(d, "lenet") == "READY", timeout=120)
    assert http(f"{server.url}/v2/models/lenet/versions/1/ready")[0] == 200


def traffic(url, seconds):
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": DIGIT_ZERO}]}
    end = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < end and sent < 5000:
        try:
            if http(f"{url}/v2/models/digits/infer", "POST", body)[0] != 200:
                break
            sent += 1
            if sent % 25 == 0:  # some errors too
                http(f"{url}/v2/models/digits/infer", "POST", b"{")
        except OSError:
            break  # the server stopped: the test failed already
    return sent


STROKE_PIXELS_JS = """
const [id, r, g, b] = arguments;
const canvas = document.querySelector('#' + id + ' canvas');
const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < px.length; i += 4) {
  if (Math.abs(px[i] - r) < 12 && Math.abs(px[i + 1] - g) < 12 && Math.abs(px[i + 2] - b) < 12 && px[i + 3] > 200) n++;
}
return n;
"""


def test_live_charts_draw_series_while_traffic_flows(server, browser, artifacts):
    d = browser.driver
    go(d, server.url, "live")
    load = threading.Thread(target=traffic, args=(server.url, 8), daemon=True)
    load.start()

    def drawn(chart, points=1):
        el = d.find_element(By.ID, chart)
        return int(el.get_attribute("data-positive") or 0) >= points

    for chart in ("chart-rate", "chart-latency", "chart-split", "chart-errors", "chart-process"):
        wait(d, f"{chart} to draw", lambda d: drawn(chart))
    # The request-rate line (#c2410c) is on the canvas, not only in the data.
    wait(d, "three points of traffic", lambda d: drawn("chart-rate", 3) and drawn("chart-latency", 3))
    assert d.execute_script(STROKE_PIXELS_JS, "chart-rate", 0xc2, 0x41, 0x0c) > 20
    assert d.execute_script(STROKE_PIXELS_JS, "chart-latency", 0x25, 0x63, 0xeb) > 20
    # One model's series.
    Select(d.find_element(By.ID, "live-model")).select_by_value("digits")
    wait(d, "digits' rate", lambda d: drawn("chart-rate"))
    load.join()
    d.save_screenshot(str(artifacts / "live.png"))


def test_runs_page_lists_bench_runs_plots_and_compares_them(server, browser, artifacts):
    d = browser.driver
    go(d, server.url, "runs")
    wait(d, "the runs", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr[data-run]")) >= 3)
    readable = d.find_elements(By.CSS_SELECTOR, '#runs-table tbody tr[data-readable="true"]')
    unreadable = d.find_elements(By.CSS_SELECTOR, '#runs-table tbody tr[data-readable="false"]')
    assert len(readable) == 2, [r.text for r in readable]
    assert len(unreadable) == 1 and "UNREADABLE" in unreadable[0].text
    assert "digits" in readable[0].text and "in-process" in readable[0].text
    ids = [r.get_attribute("data-run") for r in readable]
    click(d, "a run", f'#runs-table tr[data-run="{ids[0]}"] td:nth-child(2)')
    detail = wait(d, "a run's detail", lambda d: d.find_elements(By.CSS_SELECTOR, "#run-detail [data-detail]"))[0]
    assert "throughput" in detail.text and "p99" in detail.text
    wait(d, "the latency plot", lambda d: d.find_elements(By.CSS_SELECTOR, '#run-detail [data-chart="latency"] canvas'))
    for run_id in ids:
        click(d, "a run's checkbox", f'#runs-table tr[data-run="{run_id}"] input[type=checkbox]')
    d.find_element(By.ID, "runs-compare").click()
    table = wait(d, "the comparison", lambda d: d.find_elements(By.CSS_SELECTOR, "#run-detail table[data-compare]"))[0]
    assert "requests/s" in table.text and "p99 ms" in table.text
    d.save_screenshot(str(artifacts / "runs.png"))


def test_server_page(server, browser, artifacts):
    d = browser.driver
    go(d, server.url, "server")
    wait(d, "the engines", lambda d: d.find_elements(By.CSS_SELECTOR, '[data-engine="tract"]'))
    text = d.find_element(By.ID, "server-info").text
    assert server.addr in text and "0.1.0" in text and "none: every route is open" in text
    assert d.find_element(By.CSS_SELECTOR, '[data-engine="tract"]').get_attribute("data-available") == "true"
    d.save_screenshot(str(artifacts / "server.png"))


def test_first_paint_and_transfer_sizes(server, browser, figures):
    """Measured, not asserted (README targets): first contentful paint, bytes transferred."""
    d = browser.driver
    paints = []
    for _ in range(3):
        d.get("about:blank")
        d.get(f"{server.url}/ui#/models")
        wait(d, "the models", lambda d: len(rows(d)) >= 5)
        # Chromium may record the paint entry a little after the page is drawn, on a busy machine.
        fcp = wait(d, "the first-contentful-paint entry", lambda d: d.execute_script(
            "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null"))
        paints.append(round(fcp, 1))
    sizes = d.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/ui/assets/'))"
        ".map(e => e.decodedBodySize).concat([performance.getEntriesByType('navigation')[0].decodedBodySize])")
    figures["first_contentful_paint_ms"] = paints
    figures["page_bytes"] = sum(sizes)


def test_no_request_leaves_the_server(server, browser):
    d = browser.driver
    for page in ("models", "live", "runs", "try", "server"):
        go(d, server.url, page)
        time.sleep(0.5)
    urls = browser.drain_log()
    assert any("/ui/api/models" in u for u in urls), urls[:20]
    foreign = [u for u in urls if not (u.startswith(server.url + "/") or u.startswith(("data:", "about:", "blob:")))]
    assert not foreign, foreign


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("keyed"), sample=("digits",), broken=False, hostile=False)
    keys = ws / "keys.txt"
    keys.write_text("studio-admin-key-0123456789 admin\nstudio-score-key-0123456789 score\n")
    keys.chmod(0o600)
    srv = start(ws, "--api-key-file", str(keys))
    try:
        yield srv
    finally:
        srv.stop()


def enter_key(d, key):
    wait(d, "the key prompt", lambda d: d.find_element(By.ID, "keyprompt").is_displayed())
    field = d.find_element(By.ID, "keyinput")
    field.clear()
    field.send_keys(key)
    d.find_element(By.CSS_SELECTOR, "#keyform button[type=submit]").click()


def test_keys_prompt_score_key_sees_no_admin_actions_and_is_refused(keyed, browser, artifacts):
    d = browser.driver
    d.get(f"{keyed.url}/ui#/models")
    # No key: the prompt, and no data.
    wait(d, "the key prompt", lambda d: d.find_element(By.ID, "keyprompt").is_displayed())
    assert rows(d) == []
    d.save_screenshot(str(artifacts / "key-prompt.png"))
    enter_key(d, "wrong-key-0123456789abcdef")
    wait(d, "the refusal", lambda d: "invalid API key" in d.find_element(By.ID, "keyerror").text)
    # A score key: models, and no admin action anywhere.
    enter_key(d, "studio-score-key-0123456789")
    wait(d, "digits", lambda d: state_of(d, "digits") == "READY")
    assert d.execute_script("return document.body.dataset.role") == "score"
    assert d.find_elements(By.CSS_SELECTOR, "[data-action]") == []
    click(d, "digits", '#models-table tr[data-model="digits"]')
    wait(d, "digits' details", lambda d: d.find_elements(By.CSS_SELECTOR, '[data-detail="digits"]'))
    assert d.find_elements(By.CSS_SELECTOR, "[data-action]") == []
    # The key stays out of URLs and cookies; it lives in this tab's session storage.
    assert "studio-score-key" not in d.current_url
    assert d.execute_script("return document.cookie") == ""
    # A forged admin call from the page, with the page's own key, is refused by the server.
    status = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/v2/repository/models/digits/unload', {method: 'POST',
              headers: {Authorization: 'Bearer ' + sessionStorage.getItem('scoria.studio.key')}})
          .then(r => done(r.status), e => done(String(e)));""")
    assert status == 403
    assert http(f"{keyed.url}/v2/models/digits/ready", key="studio-score-key-0123456789")[0] == 200
    # An admin key gets the actions.
    d.find_element(By.CSS_SELECTOR, "#whoami button").click()
    enter_key(d, "studio-admin-key-0123456789")
    wait(d, "admin actions", lambda d: d.find_elements(By.CSS_SELECTOR, '[data-action="unload"]'))
    assert d.execute_script("return document.body.dataset.role") == "admin"
    urls = browser.drain_log()
    assert not [u for u in urls if "studio-" in u], "a key in a URL"


@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("hundred"), sample=(), broken=False, hostile=False)
    src = Path(__file__).resolve().parents[2] / "models" / "digits"
    import shutil
    for i in range(100):
        shutil.copytree(src, ws / "models" / f"model-{i:03d}")
    srv = start(ws)
    try:
        yield srv
    finally:
        srv.stop()


def test_a_hundred_models_stay_responsive(hundred, browser, figures, artifacts):
    d = browser.driver
    t0 = time.monotonic()
    d.get(f"{hundred.url}/ui#/models")
    wait(d, "100 rows", lambda d: len(rows(d)) == 100, timeout=60)
    figures["hundred_models_first_render_s"] = round(time.monotonic() - t0, 3)
    # Filtering and opening a model answer at once; the page's main thread stays free.
    d.execute_script("""
        window.__long = [];
        new PerformanceObserver(l => l.getEntries().forEach(e => window.__long.push(e.duration)))
          .observe({entryTypes: ['longtask']});""")
    t0 = time.monotonic()
    field = d.find_element(By.ID, "model-filter")
    field.send_keys("model-05")
    wait(d, "the filter", lambda d: len(rows(d)) == 10)
    figures["hundred_models_filter_s"] = round(time.monotonic() - t0, 3)
    t0 = time.monotonic()
    click(d, "model-057", '#models-table tr[data-model="model-057"]')
    wait(d, "a model's details", lambda d: d.find_elements(By.CSS_SELECTOR, '[data-detail="model-057"]'))
    figures["hundred_models_open_detail_s"] = round(time.monotonic() - t0, 3)
    time.sleep(3.5)  # one refresh of the list (every 3 s) while the filter stays
    assert len(rows(d)) == 10
    longest = d.execute_script("return Math.max(0, ...window.__long)")
    figures["hundred_models_longest_task_ms"] = round(longest, 1)
    d.save_screenshot(str(artifacts / "hundred-models.png"))
    # The target is a page that stays usable; a loaded 2-core machine stretches tasks, so
    # this bound only catches work that grows out of hand (the README reports the figure).
    assert longest < 2500, f"the page blocked for {longest} ms"
