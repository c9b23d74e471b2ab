"""A day on the platform: patients browse hospitals, departments and sessions, book now and
then (paying for a held slot nine times in ten, joining the waitlist when sold out), look at
their bookings and notifications, and sometimes cancel.

    SLOTENGINE_PATIENTS_CSV=patients.csv locust -f loadtest/browse_and_book.py --headless \\
        --host http://127.0.0.1:8000 -u 300 -r 50 --run-time 60s
"""

from __future__ import annotations

import random
import uuid

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

from loadtest.common import Acks, Tokens, join_waitlist, pay, process_share

STATE: dict = {}


@events.init.add_listener
def _setup(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    STATE["tokens"] = Tokens(lambda: process_share(environment))
    STATE["acks"] = Acks()


class Browser(FastHttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.patient, token = STATE["tokens"].take()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.sessions: list[str] = []

    @task(6)
    def browse(self) -> None:
        hospitals = self.client.get("/v1/hospitals").json()
        hospital = random.choice(hospitals)["id"]
        departments = self.client.get(
            f"/v1/hospitals/{hospital}/departments", name="/v1/hospitals/[id]/departments"
        ).json()
        department = random.choice(departments)["id"]
        sessions = self.client.get(
            f"/v1/departments/{department}/sessions", name="/v1/departments/[id]/sessions"
        ).json()
        self.sessions = [s["id"] for s in sessions if s["status"] == "open"]
        if self.sessions:
            self.client.get(
                f"/v1/sessions/{random.choice(self.sessions)}", name="/v1/sessions/[id]"
            )

    @task(2)
    def book(self) -> None:
        if not self.sessions:
            return
        session = random.choice(self.sessions)
        with self.client.post(
            f"/v1/sessions/{session}/bookings",
            json={"request_id": uuid.uuid4().hex},
            headers=self.headers,
            name="/v1/sessions/[id]/bookings",
            catch_response=True,
        ) as r:
            if r.status_code in (200, 201):
                STATE["acks"].record(self.patient, r.json())
                r.success()
                if r.json()["status"] == "held" and random.random() < 0.9:
                    self.pay(r.json()["booking_id"])
            elif r.status_code == 409 and r.json().get("code") == "sold_out":
                r.success()
                if random.random() < 0.3:
                    self.join_waitlist(session)
            elif r.status_code in (409, 422, 403, 429):
                r.success()
            else:
                r.failure(f"{r.status_code} {r.text[:200]}")

    def pay(self, booking_id: str) -> None:
        pay(self.client, self.headers, booking_id)

    def join_waitlist(self, session_id: str) -> None:
        answers = (200, 201, 403, 409, 422)
        join_waitlist(self.client, self.headers, session_id, uuid.uuid4().hex, answers)

    @task(2)
    def mine(self) -> None:
        bookings = self.client.get("/v1/me/bookings", headers=self.headers).json()
        live = [b for b in bookings if b["status"] in ("held", "booked")]
        if live and random.random() < 0.2:
            with self.client.post(
                f"/v1/bookings/{random.choice(live)['booking_id']}/cancel",
                headers=self.headers,
                name="/v1/bookings/[id]/cancel",
                catch_response=True,
            ) as r:
                if r.status_code == 200 or (r.status_code == 409 and "code" in r.json()):
                    r.success()  # 409 cancel_closed: past the hospital's cutoff
                else:
                    r.failure(f"{r.status_code} {r.text[:200]}")

    @task(1)
    def notifications(self) -> None:
        self.client.get("/v1/me/notifications", headers=self.headers)
