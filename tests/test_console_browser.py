"""The console in real headless Chromium (Debian's, through its executable path: nothing
downloads a browser), served by uvicorn on this test's event loop beside the time-skipping
server: sign in, caseload, chart, a refusal, the inbox, sign out, idle sign-out."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from infra.embedded_server import free_port
from tests.console_support import PASSWORD, make_console
from tests.support import clinic, enrolment_data

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,  # a real browser
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
    ),
]


# Form fields without a label, and how far a page runs past the window's width.
UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea')].filter(e => e.labels.length === 0)
    .map(e => e.name)"""
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the console did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def browser_page() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            yield await context.new_page()
        finally:
            await browser.close()


async def test_a_case_manager_in_the_browser(env: WorkflowEnvironment, tmp_path: Path) -> None:
    from playwright.async_api import Page, expect

    enrolment = Enrolment.model_validate(enrolment_data(social_needs=["housing"]))
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            await c.enrol_and_drive(env, enrolment, until=lambda s: s.program_day >= 2)
            ui = make_console(c.settings, c.store, c.client)
            async with serving(ui.app) as base, browser_page() as opened:
                page: Page = opened  # type: ignore[assignment]
                await page.goto(f"{base}/caseload")
                await expect(page).to_have_url(f"{base}/sign-in")
                await page.get_by_label("Username").fill("cm1")
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.get_by_role("link", name=pid)).to_be_visible()
                await expect(page.get_by_text("Quinlan")).to_be_visible()

                await page.get_by_role("link", name=pid).click()
                await expect(page).to_have_title(f"Chart {pid} · CarePath")
                await expect(page.get_by_text("Live from the journey")).to_be_visible()
                assert await page.evaluate(UNLABELLED) == []  # every field has its label
                await page.set_viewport_size({"width": 768, "height": 1024})  # a tablet
                assert await page.evaluate(OVERFLOW) <= 0
                await page.set_viewport_size({"width": 1280, "height": 800})
                await page.get_by_role("button", name="Record the sheet").click()
                await expect(page.locator("#answer-attendance")).to_contain_text(
                    "the sheet marks no session"
                )
                # A rule's own refusal, beside its form: step-down in the first week.
                await page.get_by_text("Progress review").click()
                await page.get_by_role("button", name="Record the review").click()
                await expect(page.locator("#answer-review")).to_contain_text("refused:")

                await page.get_by_role("link", name="Inbox").click()
                await expect(page.get_by_text("consent needed")).to_be_visible()
                await page.get_by_role("button", name="Mark done").click()
                await expect(page.get_by_text("consent recorded")).to_be_visible()

                await page.get_by_role("button", name="Sign out").click()
                await expect(page).to_have_url(f"{base}/sign-in")
                await page.goto(f"{base}/patients/{pid}")
                await expect(page).to_have_url(f"{base}/sign-in")
    actions = {(e.actor, e.action) for e in ui.console.access.search(patient_id=pid)}
    assert {("cm1", "view chart"), ("cm1", "task done")} <= actions


async def test_an_idle_console_signs_out_by_itself(tmp_path: Path) -> None:
    from playwright.async_api import Page, expect

    from tests.console_support import store_only_console

    async with store_only_console(tmp_path) as ui:
        ui.console.idle = timedelta(seconds=2)
        async with serving(ui.app) as base, browser_page() as opened:
            page: Page = opened  # type: ignore[assignment]
            await page.goto(f"{base}/sign-in")
            # By keyboard alone: the username field has the focus, Tab, Enter.
            await page.keyboard.type("audit")
            await page.keyboard.press("Tab")
            await page.keyboard.type(PASSWORD)
            await page.keyboard.press("Enter")
            await expect(page.get_by_role("heading", name="Access log")).to_be_visible()
            # Nobody touches it: the page's own timer signs out.
            await expect(page).to_have_url(f"{base}/sign-in", timeout=10_000)
    assert ("audit", "sign out") in {(e.actor, e.action) for e in ui.console.access.search()}


async def test_a_facilitator_marks_a_sheet_in_the_browser(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The morning track's facilitator signs in, lands on Groups, opens the session's
    sheet, marks a patient and submits; a chart is refused them."""
    from playwright.async_api import Page, expect

    from clinical.group_sheets import session_stamp
    from tests.console_support import Clock
    from tests.test_group_sheets import PROGRAM, TRACK, _two_in_the_morning_group

    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            one, _ = await _two_in_the_morning_group(env, c)
            now = await env.get_current_time()
            first = c.store.group_sessions(PROGRAM, TRACK, now - timedelta(days=7), now)[0]
            p1 = one.id.removeprefix("journey-")
            ui = make_console(c.settings, c.store, c.client, Clock(now))
            path = f"/groups/{PROGRAM}/{TRACK}/{session_stamp(first)}"
            async with serving(ui.app) as base, browser_page() as opened:
                page: Page = opened  # type: ignore[assignment]
                await page.goto(f"{base}/")
                await page.get_by_label("Username").fill("fac")
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page).to_have_url(f"{base}/groups")
                await expect(page.get_by_role("link", name="Caseload")).to_have_count(0)
                await page.locator(f'a[href="{path}"]').click()
                await expect(page).to_have_url(f"{base}{path}")
                assert await page.evaluate(UNLABELLED) == []  # each mark has its label
                await page.locator(f'select[name="mark:{p1}"]').select_option("attended")
                await page.get_by_role("button", name="Submit the sheet").click()
                await expect(page.get_by_text("attended, accepted")).to_be_visible()
                await page.goto(f"{base}/patients/{p1}")
                await expect(page.get_by_text("Your role may not open this page.")).to_be_visible()
    actions = {(e.actor, e.action) for e in ui.console.access.search(patient_id=p1)}
    assert ("fac", "group sheet") in actions
