"""The compute gate: one computation at a time, and a question's urgent work before waiting background work."""

from __future__ import annotations

import threading

from rag.devices import ComputeGate
from tests.threads import WAIT_S, wait_until


def test_urgent_work_goes_before_background_work_that_waited_longer():
    gate, order = ComputeGate(), []
    release = threading.Event()

    def hold_first():
        with gate.turn():
            order.append("first")
            release.wait(WAIT_S)

    def take(name: str, urgent: bool):
        with gate.turn(urgent):
            order.append(name)

    threads = [threading.Thread(target=hold_first)]
    threads[0].start()
    wait_until(lambda: order == ["first"])
    threads.append(threading.Thread(target=take, args=("generator step", False)))
    threads[-1].start()
    wait_until(lambda: gate.waiting == 1)
    threads.append(threading.Thread(target=take, args=("question", True)))
    threads[-1].start()
    wait_until(lambda: gate.waiting == 2)
    release.set()
    for thread in threads:
        thread.join()
    assert order == ["first", "question", "generator step"]


def test_one_computation_at_a_time():
    gate, inside, most = ComputeGate(), [0], [0]
    lock = threading.Lock()

    def work(urgent: bool):
        for _ in range(50):
            with gate.turn(urgent):
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=work, args=(n % 2 == 0,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1 and gate.waiting == 0
