"""A uvicorn HTTP protocol that refuses right after the headers are parsed: a measurement only.

It answers the guard's 503 from ``on_headers_complete`` when the guard has no place and no
room in its line, before uvicorn builds a request cycle, starts a task or calls the ASGI
app, writing the whole response in one call. It reaches into uvicorn's private protocol
state (``self.url``, ``self.cycle``, ``self.transport``, the parser callbacks' order) and
into the guard's private line, which is why the template does not ship it; see RESULTS.md.
Load it with ``uvicorn --http early_refusal:EarlyRefusal`` (httptools only).
"""

from types import SimpleNamespace

import my_service
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_BODY = b'{"detail":"the service is overloaded; retry after the delay in Retry-After"}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\nretry-after: 2\r\n"
    b"cache-control: no-store\r\nconnection: close\r\n\r\n" + _BODY
)
_EXEMPT = {path.encode() for path in my_service.UNGUARDED_PATHS}
# What on_body, on_message_complete and connection_lost look at once a request is answered.
_ANSWERED = SimpleNamespace(response_complete=True, message_event=SimpleNamespace(set=lambda: None))


class EarlyRefusal(HttpToolsProtocol):
    """HttpToolsProtocol that refuses a request the guard would refuse, before any task."""

    def on_headers_complete(self) -> None:
        limit: my_service.ConcurrencyLimit = my_service.app.state.guard
        stats = limit.stats
        if (
            stats.in_flight >= stats.limit
            and stats.waiting >= limit.max_waiting
            and self.url.partition(b"?")[0] not in _EXEMPT
        ):
            stats.rejected_full += 1
            self.transport.write(_REFUSAL)
            self.transport.close()
            self.cycle = _ANSWERED  # type: ignore[assignment]
            return
        super().on_headers_complete()
