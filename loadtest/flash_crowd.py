"""抢号: thousands of patients arrive within seconds of release time and press "book".

    SLOTENGINE_PATIENTS_CSV=patients.csv locust -f loadtest/flash_crowd.py --headless \\
        --host http://127.0.0.1:8000 --run-time 30s

Each user is one patient with one request id: it books, retries the same request id on 503 or
429, tries the first alternative once when told sold_out, and stops when it holds a slot or has
nowhere left to go. A held slot (a session with a fee) is paid PAY_RATE of the time (else the
hold expires and goes to the waitlist); a patient left with nothing joins the waitlist
WAITLIST_RATE of the time. The spike shape puts SPIKE_USERS users in within SPIKE_SECONDS.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import LoadTestShape, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from loadtest.common import Acks, Tokens, join_waitlist, pay, process_share, target_sessions

SPIKE_USERS = int(os.environ.get("SPIKE_USERS", "2000"))
SPIKE_SECONDS = float(os.environ.get("SPIKE_SECONDS", "3"))
HOLD_SECONDS = float(os.environ.get("HOLD_SECONDS", "20"))
PAY_RATE = float(os.environ.get("PAY_RATE", "0.9"))
WAITLIST_RATE = float(os.environ.get("WAITLIST_RATE", "0.5"))
STATE: dict = {}


@events.init.add_listener
def _setup(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    STATE["tokens"] = Tokens(lambda: process_share(environment))
    STATE["acks"] = Acks()
    STATE["sessions"] = target_sessions(environment.host)


class Patient(FastHttpUser):
    connection_timeout = 10
    network_timeout = 30

    def on_start(self) -> None:
        self.patient, token = STATE["tokens"].take()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.target = random.choice(STATE["sessions"])
        self.request_id = uuid.uuid4().hex
        self.tries_left = 2  # the target, then one alternative

    @task
    def book(self) -> None:
        if self.tries_left <= 0:
            raise StopUser()
        with self.client.post(
            f"/v1/sessions/{self.target}/bookings",
            json={"request_id": self.request_id},
            headers=self.headers,
            name="/v1/sessions/[id]/bookings",
            catch_response=True,
        ) as r:
            body = r.json() if r.content else {}
            if r.status_code in (200, 201):
                STATE["acks"].record(self.patient, body)
                r.success()
                self.tries_left = 0
                if body.get("status") == "held" and random.random() < PAY_RATE:
                    self.pay(body["booking_id"])
            elif r.status_code in (409, 422, 403):
                r.success()  # an answer, not an error: the loser is told at once
                alternatives = body.get("alternatives") or []
                self.tries_left -= 1
                if alternatives and self.tries_left > 0:
                    self.target = alternatives[0]["session_id"]
                    self.request_id = uuid.uuid4().hex
                else:
                    self.tries_left = 0
                    if body.get("code") == "sold_out" and random.random() < WAITLIST_RATE:
                        self.join_waitlist()
            elif r.status_code in (429, 503):
                r.success()  # retry the same request id a little later
            else:
                r.failure(f"{r.status_code} {body}")

    def pay(self, booking_id: str) -> None:
        pay(self.client, self.headers, booking_id)

    def join_waitlist(self) -> None:
        answers = (200, 201, 403, 409, 422, 429, 503)
        join_waitlist(self.client, self.headers, self.target, self.request_id, answers)

    def wait_time(self) -> float:
        return random.uniform(0.2, 0.6)


class Spike(LoadTestShape):
    """All users arrive within SPIKE_SECONDS of release time, then the crowd stays a while."""

    def tick(self):  # type: ignore[no-untyped-def]
        run_time = self.get_run_time()
        if run_time < SPIKE_SECONDS + HOLD_SECONDS:
            return SPIKE_USERS, SPIKE_USERS / SPIKE_SECONDS
        return None
