"""The booking guide in a real browser against real processes (see conftest.py)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from icalendar import Calendar
from playwright.sync_api import Page, expect

from tests.e2e.conftest import PortalStack
from worker import texts
from worker.entrypoints.portal.people import EMMA, KARI, OLA, PER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]  # the stack starts in the first
T = texts.PORTAL
SETTLE = 60.0  # seconds the worker and simulator get to confirm a booking


class Guide:
    """Walks the pages like a patient; names each step for the failure screenshot."""

    def __init__(self, page: Page, stack: PortalStack, node: pytest.Item) -> None:
        self.page, self.stack, self.node = page, stack, node

    def step(self, name: str) -> None:
        self.node.step = name  # type: ignore[attr-defined]

    def login(self, who: str) -> None:
        self.step("login")
        self.page.goto(f"{self.stack.url}/")
        expect(self.page).to_have_url(re.compile(r"/portal/logg-inn$"))
        self.page.get_by_label(who).check()
        self.page.get_by_role("button", name=T.login_button).click()
        expect(self.page.get_by_role("heading", level=1)).to_have_text(T.appointments_title)

    def to_calendar(self, clinic: str, service: str, practitioner: str, for_whom: str) -> None:
        """Timeavtaler -> Bestill time -> for whom -> clinic -> service -> practitioner."""
        self.step("bestill")
        self.page.get_by_role("link", name=T.nav_book).first.click()
        self.page.get_by_label(for_whom).check()
        self._next()
        self.step("klinikk")
        self.page.get_by_label(clinic).check()
        self._next()
        self.step("tjeneste")
        self.page.get_by_label(texts.service_label(service)).check()
        self._next()
        self.step("behandler")
        self.page.get_by_label(practitioner).check()
        self._next()
        self.step("kalender")
        expect(self.page.get_by_role("heading", level=1)).to_have_text(T.calendar_title)

    def _next(self) -> None:
        self.page.get_by_role("button", name=T.next).click()

    def pick_slot(self, video: bool) -> str:
        """The first free slot of the kind; returns its label ("14:00 - 14:20 ...")."""
        slots = (
            self.page.locator(".slot").filter(has=self.page.locator(".tag.video"))
            if video
            else self.page.locator(".slot:not(:has(.tag))")
        )
        first = slots.first
        label = first.locator("label").inner_text()
        first.locator("input").check()
        self._next()
        return label

    def answer_questionnaire(self, answers: list[str]) -> None:
        self.step("sporsmal")
        expect(self.page.get_by_role("heading", level=1)).to_have_text(T.questionnaire_title)
        for question, answer in zip(texts.QUESTIONNAIRES["luftveier"], answers, strict=True):
            self.page.get_by_label(question).fill(answer)
        self._next()

    def send(self, subject: str) -> str:
        """Review page: type the subject (watching the counter), send; returns the reference."""
        self.step("oppsummering")
        expect(self.page.get_by_role("heading", level=1)).to_have_text(T.review_title)
        field = self.page.get_by_label(T.review_subject)
        field.press_sequentially(subject)
        counter = f"{50 - len(subject)} {T.characters_left}"
        expect(self.page.locator("#subject-count")).to_have_text(counter)
        self.page.get_by_role("button", name=T.review_send).click()
        return self.receipt(T.receipt_request_only)

    def receipt(self, lead: str) -> str:
        self.step("kvittering")
        expect(self.page.locator(".notice .lead")).to_have_text(lead)
        return self.page.locator(".reference").inner_text()

    def wait_for_text(self, path: str, text: str, timeout: float = SETTLE) -> None:
        """Open `path` again and again until `text` is on it (the clinic answers meanwhile)."""
        self.step(path.strip("/").split("?")[0].replace("/", "-"))
        deadline = time.monotonic() + timeout
        while True:
            self.page.goto(f"{self.stack.url}{path}")
            if text in self.page.locator("main").inner_text():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} not on {path} after {timeout:.0f}s")
            time.sleep(0.5)

    def open_appointment(self, when: str, who: int = 0) -> None:
        """Timeavtaler -> the appointment whose time line starts with `when`."""
        self.page.goto(f"{self.stack.url}/timeavtaler?for={who}")
        self.page.locator(".appointment h2 a", has_text=when).first.click()
        expect(self.page.get_by_role("heading", level=1)).to_have_text(T.appointment_title)


def _slot_time(label: str) -> tuple[str, str]:
    """("14:00", "14:20") from a calendar line."""
    found = re.match(r"(\d\d:\d\d) - (\d\d:\d\d)", label)
    assert found, label
    return found.group(1), found.group(2)


@pytest.fixture
def guide(page: Page, portal_stack: PortalStack, request: pytest.FixtureRequest) -> Guide:
    return Guide(page, portal_stack, request.node)


def _day_of(page: Page, label: str) -> str:
    """The day heading above the chosen slot, e.g. "Ledige timer 2. des. 2026"."""
    return page.locator("fieldset.day", has_text=label).locator("legend").inner_text()


def test_book_a_free_slot_confirm_add_to_calendar_and_cancel(guide: Guide, page: Page) -> None:
    guide.login("Kari Nordmann")
    guide.to_calendar(
        "Testlegekontoret",
        "consultation",
        "Fastlege August September",
        T.for_whom_self + " (Kari Nordmann)",
    )
    expect(page.locator(".urgent")).to_have_text(texts.urgent_call("81569069"))
    first_day = page.locator("fieldset.day legend").first.inner_text()
    assert first_day.startswith("Ledige timer ")
    label = guide.pick_slot(video=False)
    start, end = _slot_time(label)
    guide.answer_questionnaire(["Nei", "Tre dager"])
    expect(page.locator(".when")).to_contain_text(f"kl. {start}–{end}")
    guide.send("Vondt i halsen")

    guide.wait_for_text("/innboks", "Din timereservasjon er bekreftet.")
    message = page.locator(".message").first
    expect(message).to_contain_text(texts.NO_REPLY)
    message.get_by_role("link", name=T.inbox_to_appointment).click()
    guide.step("timeavtale")
    details = page.locator("dl.details")
    expect(details).to_contain_text(texts.STATUS_ASSIGNED)
    expect(details).to_contain_text(f"kl. {start}–{end}")
    expect(details).to_contain_text("August September")
    expect(details).to_contain_text("20 minutter")

    guide.step("kalenderfil")
    with page.expect_download() as download:
        page.get_by_role("link", name=T.add_to_calendar).click()
    ics = Calendar.from_ical(Path(download.value.path()).read_bytes())
    (event,) = [c for c in ics.walk("VEVENT")]
    local = event.decoded("dtstart").astimezone(texts.OSLO)
    assert local.strftime("%H:%M") == start
    assert event.decoded("dtend").astimezone(texts.OSLO).strftime("%H:%M") == end

    guide.step("avbestill")
    page.get_by_role("button", name=T.cancel_appointment).click()
    guide.receipt(T.receipt_cancel_only)
    guide.wait_for_text("/innboks", "Timen er avbestilt")
    guide.wait_for_text("/timeavtaler", texts.STATUS_CANCELLED)


def test_book_by_video_and_start_it(guide: Guide, page: Page) -> None:
    guide.login("Kari Nordmann")
    guide.to_calendar(
        "Testlegekontoret",
        "consultation",
        "Fastlege August September",
        T.for_whom_self + " (Kari Nordmann)",
    )
    label = guide.pick_slot(video=True)
    start, _end = _slot_time(label)
    guide.answer_questionnaire(["", ""])
    expect(page.locator(".place")).to_have_text("Videotime")
    guide.send("Oppfølging")
    guide.wait_for_text("/innboks", "Dette er en videotime.")
    page.locator(".message").first.get_by_role("link", name=T.inbox_to_appointment).click()
    guide.step("videotime")
    expect(page.locator(".place")).to_have_text("Videotime")
    expect(page.locator("dl.details")).to_contain_text(f"kl. {start}")
    video = page.get_by_role("link", name=T.start_video)
    expect(video).to_have_attribute("href", re.compile(r"^https://"))


def test_a_wish_when_no_slot_fits(guide: Guide, page: Page) -> None:
    guide.login("Kari Nordmann")
    guide.to_calendar(
        "Video Legesenter",
        "consultation",
        "Videokonsultasjon",
        T.for_whom_self + " (Kari Nordmann)",
    )
    expect(page.get_by_role("heading", name=T.calendar_no_fit)).to_be_visible()
    page.get_by_role("link", name=T.calendar_wish_link).click()
    guide.step("timeonske")
    page.get_by_label(T.wish_subject).fill("Årlig kontroll")
    page.get_by_label(T.wish_message).press_sequentially("Passer best tirsdag formiddag.")
    expect(page.locator("#message-count")).to_have_text(f"{250 - 30} {T.characters_left}")
    page.get_by_label(texts.KIND_LABELS["video"]).check()
    page.get_by_role("button", name=T.wish_send).click()
    guide.receipt(T.receipt_wish_only)
    guide.wait_for_text("/innboks", "Klinikken har svart på timeønsket ditt")


@pytest.mark.parametrize(
    ("user", "patient", "relation"),
    [
        ("Ola Nordmann", "Emma Nordmann", "parental_responsibility"),
        ("Kari Nordmann", "Per Hansen", "power_of_attorney"),
    ],
)
def test_booking_on_behalf_of_someone(
    guide: Guide, page: Page, user: str, patient: str, relation: str
) -> None:
    guide.login(user)
    acting = texts.acting_for(patient, relation)
    guide.to_calendar("Testlegekontoret", "consultation", "Fastlege August September", acting)
    expect(page.locator(".acting-for")).to_contain_text(patient)
    label = guide.pick_slot(video=False)
    start, _end = _slot_time(label)
    guide.answer_questionnaire(["Ja", "Siden i går"])
    expect(page.locator("dl.details")).to_contain_text(patient)
    guide.send("Øreverk")
    guide.wait_for_text("/innboks?for=1", "Din timereservasjon er bekreftet.")
    guide.wait_for_text("/timeavtaler?for=1", texts.STATUS_ASSIGNED)
    theirs = page.locator(".appointment", has_text=f"kl. {start}")
    expect(theirs).to_have_count(1)
    uid = theirs.get_attribute("data-uid")
    assert uid
    page.goto(f"{guide.stack.url}/timeavtaler?for=0")  # not among the user's own appointments
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.locator(f'.appointment[data-uid="{uid}"]')).to_have_count(0)


def test_the_subject_limit_and_the_error_summary(guide: Guide, page: Page) -> None:
    guide.login("Kari Nordmann")
    guide.to_calendar(
        "Testlegekontoret",
        "consultation",
        "Fastlege August September",
        T.for_whom_self + " (Kari Nordmann)",
    )
    page.get_by_role("button", name=T.next).click()  # no slot chosen
    guide.step("kalender-feil")
    summary = page.locator("#error-summary")
    expect(summary).to_contain_text(T.calendar_missing)
    expect(summary).to_be_focused()
    guide.pick_slot(video=False)
    guide.answer_questionnaire(["", ""])
    guide.step("for-lang")
    page.get_by_label(T.review_subject).fill("x" * 51)
    expect(page.locator("#subject-count")).to_have_text(f"-1 {T.characters_left}")
    page.get_by_role("button", name=T.review_send).click()
    expect(page.locator("#error-summary")).to_contain_text(texts.too_long(T.review_subject, 50, 51))
    expect(page.get_by_label(T.review_subject)).to_have_attribute("aria-invalid", "true")
    page.locator("#error-summary a").click()
    expect(page.get_by_label(T.review_subject)).to_be_focused()


def test_keyboard_skip_link_and_language(guide: Guide, page: Page) -> None:
    guide.login("Kari Nordmann")
    assert page.locator("html").get_attribute("lang") == "nb"
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name=T.skip_link)
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def test_choosing_with_the_keyboard(guide: Guide, page: Page) -> None:
    """Arrow keys move through a choice, Enter goes on (no mouse)."""
    guide.login("Ola Nordmann")
    page.goto(f"{guide.stack.url}/bestill?for=0")
    page.get_by_label(T.for_whom_self, exact=False).focus()
    page.keyboard.press("ArrowDown")
    child = texts.acting_for("Emma Nordmann", "parental_responsibility")
    expect(page.get_by_label(child)).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(T.clinic_title)
    expect(page.locator(".acting-for")).to_contain_text("Emma Nordmann")
    page.keyboard.press("Tab")  # the skip link comes first on every page
    expect(page.get_by_role("link", name=T.skip_link)).to_be_focused()


def test_no_fnr_or_free_text_in_the_logs(guide: Guide, page: Page) -> None:
    """After a wish sent through the pages (and whatever ran before), no process logged a
    fødselsnummer or what the patient wrote."""
    guide.login("Ola Nordmann")
    page.goto(f"{guide.stack.url}/bestill/onske?for=1&clinic=8090001&service=consultation")
    page.get_by_label(T.wish_subject).fill("Hoste om natten")
    page.get_by_label(T.wish_message).fill("Helst etter skoletid, torsdag eller fredag.")
    page.get_by_role("button", name=T.wish_send).click()
    guide.receipt(T.receipt_wish_only)
    guide.wait_for_text("/innboks?for=1", "Klinikken har svart på timeønsket ditt")
    logs = {p.name: p.read_text(encoding="utf-8") for p in guide.stack.logs.glob("*.log")}
    assert "POST /v1/bookings" in logs["api.log"]
    people = (KARI, OLA, EMMA, PER)
    for name, text in logs.items():
        for person in people:
            assert person.fnr not in text, f"{name} logs a fødselsnummer"
        assert "Hoste om natten" not in text, name
        assert "skoletid" not in text, name
