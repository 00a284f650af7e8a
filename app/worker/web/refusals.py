"""What the worker's web server logs about a request it refuses before any route sees it.

aiohttp answers a request its parser cannot take (a request line or header field over
8190 bytes, too many headers, a bad method, header or body framing) with a 400 and logs
it at ERROR with a traceback whose message quotes the offending bytes: a path that holds
an email, a `Cookie` header that holds a staff session. `RefusedRequestLog` stands in
for aiohttp's server logger (`log_refusals_without_content` installs it in Faust's web
driver): such a refusal becomes one warning line naming what was wrong, the limit it
crossed, and the method and route template when the request line was the part read,
never the bytes sent nor the client's address. Other lines (a handler's crash) pass
through unchanged.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.log import server_logger
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from app.worker.faust_patches import web_runner_options

#: What each parser error says about a request; any other: "a malformed request".
REFUSAL_KINDS: Mapping[str, str] = {
    "LineTooLong": "a request line or header field too long",
    "BadHttpMethod": "not an HTTP request (bad method)",
    "BadStatusLine": "a bad request line",
    "InvalidHeader": "a bad header",
    "InvalidURLError": "a bad request target",
    "ContentLengthError": "a body shorter than its Content-Length",
    "TransferEncodingError": "a bad chunked body",
    "ContentEncodingError": "a bad compressed body",
}

#: The request line's start as a parser error quotes it: `[METHOD ]/path[?query]`.
_TARGET = re.compile(r"^(?:(?P<method>[A-Z]{3,10}) )?(?P<target>/\S*)")


def route_template(path: str, templates: Iterable[str]) -> str | None:
    """The first of `templates` (aiohttp's `/links/{name}/{value}`) whose segments match
    `path`'s, a `{...}` segment matching any non-empty one; None when none does."""
    segments = path.split("/")
    for template in templates:
        parts = template.split("/")
        if len(parts) == len(segments) and all(
            part == segment or (part.startswith("{") and part.endswith("}") and segment != "")
            for part, segment in zip(parts, segments, strict=True)
        ):
            return template
    return None


def describe_refusal(error: HttpProcessingError, templates: Iterable[str]) -> dict[str, Any]:
    """The fields a refused request's log line may carry: `refused` (what was wrong),
    `status`, `limit_bytes` for a line too long, and `method` and `route` (a template)
    when the error quotes the request line up to its query (a cut-off path names none)."""
    fields: dict[str, Any] = {
        "refused": REFUSAL_KINDS.get(type(error).__name__, "a malformed request"),
        "status": error.code or 400,
    }
    if isinstance(error, LineTooLong):
        if len(error.args) > 1 and str(error.args[1]).isdigit():
            fields["limit_bytes"] = int(error.args[1])
        line = error.args[0] if error.args else b""
        text = line.decode("latin-1") if isinstance(line, bytes | bytearray) else str(line)
        match = _TARGET.match(text)
        if match and "?" in match["target"]:  # the whole path is there
            if match["method"]:
                fields["method"] = match["method"]
            fields["route"] = route_template(match["target"].split("?", 1)[0], templates)
    return fields


def _exception(exc_info: Any) -> BaseException | None:
    """The exception a logging call's `exc_info=` names (True: the one being handled)."""
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1]
    return None


class RefusedRequestLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, minus the content of refused requests (see the module)."""

    def __init__(self, logger: logging.Logger, templates: Callable[[], Iterable[str]]) -> None:
        super().__init__(logger, {})
        self._templates = templates

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        error = _exception(kwargs.get("exc_info"))
        if not isinstance(error, HttpProcessingError):
            super().log(level, msg, *args, **kwargs)
            return
        fields = describe_refusal(error, self._templates())
        where = " ".join(str(fields[k]) for k in ("method", "route") if fields.get(k))
        limit = f" (over {fields['limit_bytes']} bytes)" if "limit_bytes" in fields else ""
        self.logger.log(
            min(level, logging.WARNING),  # the client's mistake, not the worker's error
            "refused a request with %s%s%s: %s",
            fields["refused"],
            limit,
            f" to {where}" if where else "",
            fields["status"],
            extra=fields,
        )


def log_refusals_without_content(driver: AiohttpWeb) -> None:
    """Make the web server log refused requests through `RefusedRequestLog`.

    Faust builds its aiohttp `AppRunner` in the driver and hands it no logger; the
    runner passes the keyword arguments it was built with to every connection's
    request handler when the server starts, so this must run before that.
    """
    router = driver.web_app.router
    web_runner_options(driver)["logger"] = RefusedRequestLog(
        server_logger, lambda: [resource.canonical for resource in router.resources()]
    )
