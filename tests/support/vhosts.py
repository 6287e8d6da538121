"""RabbitMQ virtual hosts for tests, one each, made with rabbitmqctl.

rabbitmqctl spends about a second starting up, so each call does as much as it can and the
next test's virtual host is made while the current test runs.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

USER = "guest"
# rabbit_vhost:add/2 and set_permissions/6 have kept these signatures since 3.8.
_ADD_AND_PERMIT = (
    'ok = rabbit_vhost:add(<<"{vhost}">>, <<"mailer-tests">>),'
    ' ok = rabbit_auth_backend_internal:set_permissions(<<"{user}">>, <<"{vhost}">>,'
    ' <<".*">>, <<".*">>, <<".*">>, <<"mailer-tests">>).'
)


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def _create() -> str:
    vhost = f"mailer-test-{uuid.uuid4().hex[:12]}"
    try:
        made = rabbitmqctl("eval", _ADD_AND_PERMIT.format(vhost=vhost, user=USER)).strip()
    except subprocess.CalledProcessError:
        made = ""
    if made != "ok":  # a broker whose internals differ: the two documented commands
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, USER, ".*", ".*", ".*")
    return vhost


class VirtualHosts:
    """Hands out fresh virtual hosts, always one made ahead; deletes them afterwards."""

    def __init__(self) -> None:
        self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vhost")
        self._next: Future[str] = self._maker.submit(_create)
        self._deleting: list[threading.Thread] = []

    def take(self) -> str:
        vhost = self._next.result()
        self._next = self._maker.submit(_create)
        return vhost

    def give_back(self, vhost: str) -> None:
        thread = threading.Thread(target=rabbitmqctl, args=("delete_vhost", vhost), daemon=True)
        thread.start()
        self._deleting.append(thread)

    def close(self) -> None:
        if self._next.exception(timeout=60) is None:  # one that failed needs no deleting
            self.give_back(self._next.result())
        self._maker.shutdown(wait=False)
        for thread in self._deleting:
            thread.join(timeout=30)
