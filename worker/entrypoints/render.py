"""Plain-text renderings of the CLI views (tables for people, --json for programs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo


@cache
def oslo() -> ZoneInfo:
    """Europe/Oslo, loaded on first use: `--json` output never needs it (zoneinfo's import
    is a tenth of a read-only verb's start)."""
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Oslo")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def local(iso: str | None) -> str:
    """An ISO timestamp shown in Oslo time."""
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(oslo()).strftime("%Y-%m-%d %H:%M")


def booking_text(d: dict[str, Any]) -> str:
    """A booking, its history and messages."""
    head = [f"booking {d['id']}  action={d['action']}  state={d['state']}"]
    if d["reason"]:
        head.append(f"reason: {d['reason']}")
    hist = table(
        ["at", "from", "to", "reason"],
        [(local(h["at"]), h["from"] or "-", h["to"], h["reason"] or "") for h in d["history"]],
    )
    msgs = table(
        ["dir", "msg_id", "type", "function", "status"],
        [
            (m["direction"], m["msg_id"], m["type"], m["function"], m["status"])
            for m in d["messages"]
        ],
    )
    return "\n".join(head) + "\n\nhistory\n" + hist + "\n\nmessages\n" + msgs


def inbox_text(items: list[dict[str, Any]]) -> str:
    """The inbox: one block per notification."""
    if not items:
        return "(ingen meldinger)"
    blocks = [
        f"[{local(n['created_at'])}] {n['title']}  ({n['event']})\n"
        + "\n".join(f"    {line}" if line else "" for line in n["body"].splitlines())
        for n in items
    ]
    return "\n\n".join(blocks)


def slots_text(d: dict[str, Any]) -> str:
    """Free slots as a table (`timebok slots`)."""
    head = f"Ledige timer hos {d['clinic']} {d['from']} - {d['to']}"
    head += " (fra hurtigbufferen)" if d.get("cached") else ""
    if not d["slots"]:
        return f"{head}\n(ingen ledige timer: send heller et timeønske)"
    rows = [
        (
            local(s["start"]),
            local(s["end"])[-5:],
            s["appointment_type"],
            s["service"],
            (s["practitioner"] or {}).get("name"),
            s["location"],
            s["id"],
        )
        for s in d["slots"]
    ]
    headers = ["start", "end", "type", "service", "practitioner", "location", "id"]
    return f"{head}\n{table(headers, rows)}"


def planned_text(d: dict[str, Any]) -> str:
    """A patient's planned appointments at a clinic (`timebok planned`)."""
    return f"Planlagte timer hos {d['clinic']}\n{appointments_text(d['appointments'])}"


def appointments_text(items: list[dict[str, Any]]) -> str:
    """Timeavtaler as a table."""
    if not items:
        return "(ingen timeavtaler)"
    return table(
        ["start", "min", "status", "type", "practitioner", "location", "uid"],
        [
            (
                local(a["start"]),
                a["duration_minutes"],
                a["status"],
                a["appointment_type"],
                a["practitioner"],
                a["location"],
                a["uid"],
            )
            for a in items
        ],
    )


def dlq_text(items: list[dict[str, Any]]) -> str:
    """Dead letters as a table."""
    if not items:
        return "no dead letters"
    return table(
        ["id", "kind", "code", "queue", "created", "reason"],
        [
            (
                d["id"],
                d["kind"],
                d["error_code"],
                d["source_queue"],
                local(d["created_at"]),
                (d["reason"] or "")[:70],
            )
            for d in items
        ],
    )


def status_text(d: dict[str, Any]) -> str:
    """The operator's status page."""
    queues = table(["queue", "depth"], sorted(d["queues"].items()))
    states = table(["state", "bookings"], sorted(d["bookings_by_state"].items()))
    waiting = table(
        ["clinic", "oldest waiting since", "booking"],
        [(c, local(w["since"]), w["booking_id"]) for c, w in sorted(d["oldest_waiting"].items())],
    )
    lines = [
        queues,
        "",
        f"in flight (unacked): {d['in_flight']}   outbox backlog: {d['outbox_backlog']}   "
        f"dead letters: {d['dead_letters']}",
        "",
        states,
        "",
        waiting,
    ]
    if d.get("certificates"):
        lines += ["", certificates_table(d["certificates"])]
    if d["attention"]:
        lines += ["", "needs attention:"] + [f"  - {a}" for a in d["attention"]]
    return "\n".join(lines)


def certificates_table(rows: list[dict[str, Any]]) -> str:
    """Each configured certificate with its expiry, for `timebok status`."""
    return table(
        ["party", "certificate", "expires", "days left", "problem"],
        [
            (
                f"{r['her_id']} (own)" if r["own"] else r["her_id"],
                r["role"],
                (r["not_after"] or "-")[:10],
                "-" if r["days_left"] is None else r["days_left"],
                r["problem"] or "",
            )
            for r in rows
        ],
    )


def certs_init_text(d: dict[str, Any]) -> str:
    """What `timebok certs init` wrote, and the settings and registry lines that use it."""
    lines = [
        f"test PKI in {d['directory']}: {len(d['written'])} files written, "
        f"{len(d['kept'])} kept (CA certificate {d['ca']})",
        "",
        "# settings of our own party",
        *(f"{name}={value}" for name, value in d["settings"].items()),
    ]
    for entry in d["registry"]:
        lines += [
            "",
            f"# {d['registry_file']}: in the [[clinic]] with her_id = {entry['her_id']}"
            f" ({entry['name']})",
            f'signing_cert = "{entry["signing_cert"]}"',
            f'encryption_cert = "{entry["encryption_cert"]}"',
        ]
    return "\n".join(lines)
