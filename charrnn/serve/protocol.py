"""uvicorn's HTTP/1.1 protocol with a deadline for a request's headers.

uvicorn closes a connection idle after a response (`timeout_keep_alive`) but sets no time for a
request's headers to arrive: a client can open connections and send a byte a minute, holding a
slot of `limit_concurrency` each. Here a connection whose next request's headers are not complete
within `HEADER_SECONDS` of its opening (or of its last response) is closed. The body has its own
deadline in the app (Limits.body_seconds).
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_SECONDS = 10.0


def protocol_with_header_deadline(seconds: float = HEADER_SECONDS) -> type:
    """An H11Protocol class closing connections whose headers take longer than `seconds`."""

    class HeaderDeadlineProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            self._header_timer = self.loop.call_later(seconds, self._header_deadline, self.cycle)

        def _header_deadline(self, cycle_then) -> None:
            # A new request's headers were read if a new cycle began since the timer was armed.
            if self.cycle is cycle_then and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
