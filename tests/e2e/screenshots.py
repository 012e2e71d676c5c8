"""`make screenshots`: the booking guide's steps as PNGs in docs/screenshots/.

Starts what `make portal` starts (embedded defaults, a store of its own in .timebok/shots/),
walks the guide in Debian's Chromium and saves one full-page screenshot per step.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.e2e.browser import chromium
from worker import texts
from worker.entrypoints.portal_demo import portal_stack
from worker.settings import DEFAULT_DATA_DIR, load

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
T = texts.PORTAL


class Shots:
    """Saves numbered screenshots of the current page."""

    def __init__(self, page: Page) -> None:
        self.page, self.n = page, 0

    def take(self, name: str) -> None:
        self.n += 1
        path = OUT / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"  {path.relative_to(OUT.parents[1])}")


def _next(page: Page) -> None:
    page.get_by_role("button", name=T.next).click()


def _until(page: Page, url: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if text in page.locator("main").inner_text():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not on {url} after {timeout:.0f}s")
        time.sleep(0.5)


def walk(page: Page, base: str) -> None:
    """The guide, as Kari Nordmann booking a video consultation."""
    shot = Shots(page)
    page.goto(f"{base}logg-inn")
    shot.take("logg-inn")
    page.get_by_label("Kari Nordmann").check()
    page.get_by_role("button", name=T.login_button).click()
    page.get_by_role("link", name=T.nav_book).first.click()
    shot.take("hvem-gjelder-timen")
    _next(page)
    shot.take("velg-klinikk")
    page.get_by_label("Testlegekontoret").check()
    _next(page)
    page.get_by_label(texts.service_label("consultation")).check()
    shot.take("velg-tjeneste")
    _next(page)
    _next(page)  # the first practitioner is chosen
    shot.take("ledige-timer")
    video = page.locator(".slot").filter(has=page.locator(".tag.video")).first
    video.locator("input").check()
    _next(page)
    page.get_by_label(texts.QUESTIONNAIRES["luftveier"][0]).fill("Nei")
    shot.take("sporsmal")
    _next(page)
    page.get_by_label(T.review_subject).press_sequentially("Oppfølging etter prøvesvar")
    shot.take("oppsummering")
    page.get_by_role("button", name=T.review_send).click()
    expect(page.locator(".notice")).to_be_visible()
    shot.take("kvittering")
    _until(page, f"{base}innboks", "Din timereservasjon er bekreftet.")
    shot.take("innboks")
    page.goto(f"{base}timeavtaler")
    shot.take("timeavtaler")
    page.locator(".appointment h2 a").first.click()
    shot.take("timeavtale-video")
    page.goto(f"{base}bestill/onske?for=0&clinic=8090001&service=consultation")
    page.get_by_label(T.wish_subject).fill("Årlig kontroll")
    page.get_by_label(T.wish_message).press_sequentially("Passer best tirsdag formiddag.")
    shot.take("timeonske")
    page.get_by_label(T.wish_subject).fill("")
    page.get_by_role("button", name=T.wish_send).click()
    shot.take("feiloppsummering")


def main() -> int:
    """Start the stack, take the screenshots, stop the stack."""
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    with portal_stack(load(), sys.stdout, data_dir=DEFAULT_DATA_DIR / "shots") as running:
        print(f"screenshots of {running.url} into {OUT}")
        with chromium() as browser:
            context = browser.new_context(
                locale="nb-NO", timezone_id="Europe/Oslo", viewport={"width": 1100, "height": 760}
            )
            walk(context.new_page(), running.url)
            context.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
