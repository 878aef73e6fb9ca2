"""The console in a real headless Chromium (Debian's /usr/bin/chromium via Playwright):
an operator logs in, finds a call by a phrase its caller said, sees its timeline with an
interruption and its tool calls, exports it; each step is in the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.console.conftest import PASSWORD, Seeded, audit_actions
from tests.e2e.conftest import LiveService

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def chromium() -> str:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: scripts/test installs it "
                    "(apt-get install -y chromium)", pytrace=False)
    return str(CHROMIUM)


async def test_operator_finds_a_call_by_phrase_sees_its_timeline_and_exports_it(
    console: tuple[LiveService, Seeded], chromium: str, tmp_path: Path
) -> None:
    service, seeded = console
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True,
                                           args=["--no-sandbox"])
        try:
            context = await browser.new_context(accept_downloads=True,
                                                viewport={"width": 1366, "height": 768})
            page = await context.new_page()
            await page.goto(f"{service.base_url}/console/calls")
            assert "/console/login" in page.url  # sent to log in first
            await page.fill("input[name=username]", "supervisor")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/console/calls")

            await page.fill("input[name=q]", "parcel never arrived")
            await page.click("#call-filters button[type=submit]")
            await page.wait_for_url("**/console/calls?*")
            rows = page.locator("tr.call-row")
            assert await rows.count() == 1
            await rows.first.locator("a").click()
            await page.wait_for_url(f"**/console/calls/{seeded.call_id}")

            svg = page.locator("svg#timeline")
            assert await svg.is_visible()
            assert await svg.locator("rect.turn.caller").count() == 2
            assert await svg.locator("rect.turn.agent.interrupted").count() == 2  # heard + cut
            assert await svg.locator("rect.unheard").count() == 1
            assert await svg.locator("rect.overlap").count() >= 1
            assert await svg.locator("line.latency").count() == 2
            assert "order_status" in await page.locator("#tool-calls").inner_text()
            interrupted = page.locator("tr.turn-row.interrupted")
            assert "Heard: I am sorry to hear that. Your order" in await interrupted.inner_text()

            async with page.expect_download() as info:
                await page.click("#export-json")
            download = await info.value
            saved = tmp_path / download.suggested_filename
            await download.save_as(saved)
            exported = json.loads(saved.read_text())
            assert exported["call"]["id"] == seeded.call_id
            assert [t["name"] for t in exported["tool_calls"]] == ["order_status"]
        finally:
            await browser.close()
    actions = await audit_actions(service)
    assert ("operator:supervisor", "console.login", None) in actions
    assert ("operator:supervisor", "console.transcript_viewed", seeded.call_id) in actions
    assert ("operator:supervisor", "console.call_exported", seeded.call_id) in actions


async def test_a_viewer_in_the_browser_gets_no_export_links_and_a_refusal(
    console: tuple[LiveService, Seeded], chromium: str
) -> None:
    service, seeded = console
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True,
                                           args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            await page.goto(f"{service.base_url}/console/login")
            await page.fill("input[name=username]", "viewer")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/console/")
            await page.goto(f"{service.base_url}/console/calls/{seeded.call_id}")
            assert await page.locator("#export-json").count() == 0
            response = await page.goto(
                f"{service.base_url}/console/calls/{seeded.call_id}/export.json")
            assert response is not None and response.status == 403
            assert "may not do this" in await page.locator("#problem").inner_text()
        finally:
            await browser.close()
