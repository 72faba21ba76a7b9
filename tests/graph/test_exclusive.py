"""Destructive users of one server queue instead of emptying it under each other."""

import threading

import pytest

from resources.neo4j.exclusive import exclusive_use

# Fixed names: the lock files stay in the temporary directory, one per name.
SERVER, OTHER_SERVER = "docgraph-test:exclusive-a", "docgraph-test:exclusive-b"


def test_a_second_user_waits_for_the_first():
    server = SERVER
    with exclusive_use(server):
        with pytest.raises(TimeoutError, match="stayed in use"), \
                exclusive_use(server, wait_seconds=0.3):
            pass
        with exclusive_use(OTHER_SERVER, wait_seconds=0.3):
            pass  # other servers are not affected

    order = []

    def second() -> None:
        with exclusive_use(server, wait_seconds=10):
            order.append("second")

    with exclusive_use(server):
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.5)  # it cannot finish while we hold the lock
        order.append("first done")
    waiter.join(10)
    assert order == ["first done", "second"]
