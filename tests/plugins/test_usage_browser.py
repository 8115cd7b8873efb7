"""The admin page in a real browser: Debian's Chromium, driven by Selenium, after real traffic
through a gateway that runs examples/usage.toml as written.

What a person would see is asserted: each key's numbers are the ledger's, the credential
the upstream refused is shown set aside, the charts are drawn, and no secret is anywhere
in the page.  A screenshot is saved for the reviewer (``GATEWAY_ADMIN_SCREENSHOT`` names
another copy, e.g. ``docs/admin.png``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.keys import key_digest, new_key
from gateway_plugins.usage.stores import open_store
from gateway_plugins.usage.times import start_of_month
from tests.openai_accounts import Account, OpenAIAccounts

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "usage.toml"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian, through its chromedriver."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed, but CI must run this")
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,2400")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def test_admin_page_in_a_browser_after_real_traffic(
    browser: Any,
    start_gateway: Callable[..., Awaitable[Any]],
    serve_app: Callable[[web.Application], Awaitable[str]],
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    api = await OpenAIAccounts.serve(serve_app)
    # org-main's key is refused as invalid: the pool sets it aside and retries on org-spare.
    api.accounts["sk-main-secret"] = Account("org-main", trouble="invalid")
    api.accounts["sk-spare-secret"] = Account("org-spare")
    alice, bob, admin = new_key()[0], new_key()[0], new_key()[0]
    ledger = str(tmp_path / "usage.sqlite3")
    secrets = [alice, bob, admin, "sk-main-secret", "sk-spare-secret", "chatgpt-secret-1"]
    env = {
        "CHATGPT_BASE_URL": api.url,
        "OPENAI_BASE_URL": api.url,
        "GO_CHATGPT_API_PROXY": "",
        "ALICE_KEY_SHA256": key_digest(alice),
        "BOB_KEY_SHA256": key_digest(bob),
        "ADMIN_KEY_SHA256": key_digest(admin),
        "CHATGPT_ACCESS_TOKEN_1": "chatgpt-secret-1",
        "OPENAI_API_KEY": "sk-main-secret",
        "OPENAI_API_KEY_SPARE": "sk-spare-secret",
        "REDIS_URL": "",
        "USAGE_STORE": ledger,
    }
    gateway = await start_gateway(EXAMPLE.read_text(), env)

    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    traffic = [(alice, chat)] * 3 + [(bob, {**chat, "model": "gpt-4o"})] * 2
    for key, body in traffic:
        headers = {"Authorization": f"Bearer {key}"}
        async with gateway.request("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200, await r.text()
    async with gateway.request("GET", "/v1/models", headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401  # an unknown key: a row without a key, and an error
    assert "sk-main-secret" in api.keys_seen()  # the refused credential was tried

    admin_headers = {"Authorization": f"Bearer {admin}"}
    for _ in range(100):  # rows reach the ledger within its flush interval (1 s)
        async with gateway.request("GET", "/admin/api/dashboard", headers=admin_headers) as r:
            assert r.status == 200
            document = await r.json()
        if sum(k["today"]["requests"] for k in document["keys"]) == len(traffic) + 1:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"the ledger did not receive the rows: {document['keys']}")

    # The browser asks for the admin key (HTTP Basic); it is given in the URL.
    host = gateway.url.removeprefix("http://")
    await asyncio.to_thread(browser.get, f"http://ops:{admin}@{host}/admin")
    assert await asyncio.to_thread(lambda: browser.title) == "Gateway usage"

    async with open_store(ledger) as store:
        ledger_keys = {
            t.group: t
            for t in await store.totals("key", start_of_month(time.time()), time.time() + 1)
        }

    def cell(kind: str, name: str, css: str) -> str:
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-{kind}="{name}"]')
        return str(row.find_element(By.CSS_SELECTOR, f"td.{css}").text)

    def seen() -> dict[str, Any]:
        keys = {
            name: (cell("key", name, "month-requests"), cell("key", name, "month-tokens"))
            for name in ("alice", "bob")
        }
        quotas = {name: cell("key", name, "quotas") for name in ("alice", "bob")}
        credential = browser.find_element(By.CSS_SELECTOR, 'tr[data-credential="org-main"]')
        bars = browser.find_elements(By.CSS_SELECTOR, "#charts svg rect.bar")
        heights = [float(bar.get_attribute("height")) for bar in bars]
        svg_box = browser.find_element(By.CSS_SELECTOR, "#charts svg").size
        return {
            "keys": keys,
            "quotas": quotas,
            "credential": credential.text,
            "heights": heights,
            "svg": svg_box,
            "source": browser.page_source,
            "screenshot": browser.get_screenshot_as_png(),
        }

    page = await asyncio.to_thread(seen)
    for name in ("alice", "bob"):
        totals = ledger_keys[name]
        assert page["keys"][name] == (str(totals.requests), str(totals.total_tokens))
        # The example's monthly-requests quota (10000), less what the ledger counted.
        left = 10000 - totals.requests
        assert f"monthly-requests: {left} of 10000 requests left this month" in page["quotas"][name]
    assert ledger_keys["alice"].requests == 3 and ledger_keys["bob"].requests == 2
    assert ledger_keys["alice"].total_tokens == 12  # the upstream's usage, 4 a request
    assert "set aside" in page["credential"]
    assert page["heights"] and all(h > 0 for h in page["heights"])
    assert page["svg"]["width"] > 0 and page["svg"]["height"] > 0
    for secret in secrets:
        assert secret not in page["source"]
        assert base64.b64encode(secret.encode()).decode() not in page["source"]

    shot = tmp_path / "admin.png"
    shot.write_bytes(page["screenshot"])
    assert shot.stat().st_size > 10_000
    if os.environ.get("GATEWAY_ADMIN_SCREENSHOT"):
        Path(os.environ["GATEWAY_ADMIN_SCREENSHOT"]).write_bytes(page["screenshot"])
