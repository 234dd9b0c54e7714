"""What the commands show: tables that line up with Chinese text, and the status."""

from __future__ import annotations

from datetime import UTC, datetime

from feedsvc.cli.present import ServiceState, status_report, status_text, table
from feedsvc.model import SourceStatus
from feedsvc.store import DeliveryProblem

AT = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


def test_a_wide_character_takes_two_columns() -> None:
    assert table(["a", "b"], [["港股", 1], ["x", 22]]).splitlines() == [
        "a     b",
        "----  --",
        "港股  1",
        "x     22",
    ]


def source(name: str, *, enabled: bool = True, failures: int = 0) -> SourceStatus:
    return SourceStatus(
        name=name,
        url=f"http://example.com/{name}",
        enabled=enabled,
        last_success=AT,
        last_error_at=AT if failures else None,
        last_error_kind="http" if failures else None,
        last_error="503 Service Unavailable" if failures else None,
        consecutive_failures=failures,
        next_poll=None,
        entry_count=3,
    )


STATE = ServiceState(
    sources=[source("broken", failures=2), source("off", enabled=False), source("fine")],
    outbox={"sent": 4, "pending": 1},
    problems=[DeliveryProblem(7, "a@example.com", "<m@x>", "550 no", AT, True, AT)],
    unsubscribed={("b@example.com", "hk")},
)


EXPECTED_STATUS = """\
source  state     failures  last success          next poll  entries  url                        last error
------  --------  --------  --------------------  ---------  -------  -------------------------  -----------------------------
broken  failing   2         2024-05-01 08:30:00Z  -          3        http://example.com/broken  http: 503 Service Unavailable
off     disabled  0         2024-05-01 08:30:00Z  -          3        http://example.com/off
fine    ok        0         2024-05-01 08:30:00Z  -          3        http://example.com/fine
outbox: pending=1, sent=4

deliveries that failed (newest first):
outbox  to             failed at             state   error
------  -------------  --------------------  ------  ------
7       a@example.com  2024-05-01 08:30:00Z  failed  550 no
unsubscribed (feedsvc resubscribe undoes it): b@example.com (hk)"""  # noqa: E501


def test_status_text_shows_states_problems_and_unsubscribes() -> None:
    assert status_text(STATE) == EXPECTED_STATUS


def test_status_report_is_plain_json_data() -> None:
    report = status_report(STATE)
    assert [s["state"] for s in report["sources"]] == ["failing", "disabled", "ok"]  # type: ignore[index]
    assert report["delivery_problems"] == [
        {
            "outbox_id": 7,
            "subscriber": "a@example.com",
            "message_id": "<m@x>",
            "error": "550 no",
            "at": AT.isoformat(),
            "permanent": True,
            "next_attempt": AT.isoformat(),
        }
    ]
    assert report["unsubscribed"] == [{"email": "b@example.com", "subscription": "hk"}]
