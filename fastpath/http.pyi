"""HTTP/1.x request heads: method, request target, path and host. C-level API: http.pxd."""

from dataclasses import dataclass

from fastpath.names import ParseStatus

@dataclass(frozen=True)
class HttpRequest:
    """The parse result. Fields other than status are empty unless status is OK or NO_NAME.

    For page-level URL lists (e.g. the IWF's) compare `url`: the lower-cased host (port and trailing
    dot removed) followed by the path exactly as sent (not percent-decoded, query kept, any '#'
    fragment dropped), with "/" put in front when the path does not start with one."""

    status: ParseStatus
    method: str | None
    target: bytes | None  # the request-target exactly as sent
    path: bytes | None  # origin-form: the target; absolute-form: after the authority; else b""
    host: str | None  # from an absolute-form or CONNECT target, else the Host field; normalised
    host_is_ip: bool  # host is an IPv4 or [IPv6] literal, not a name (status NO_NAME)
    port: int | None  # port given with the host
    url: bytes | None  # host + path for URL matching, as described above
    head_length: int  # bytes of request line and header fields, through the empty line

def parse_request(data: bytes) -> HttpRequest:
    """Parses the first bytes of a plain-HTTP connection: one request head (a body may follow).

    NEED_MORE until the head is complete; MALFORMED for bytes that are not an HTTP/1.x request, more
    than one Host field, or a target and Host field naming different hosts; NOT_HANDLED for another
    HTTP version (the HTTP/2 prior-knowledge preface). HTTP/1.1 without a Host field is MALFORMED."""
