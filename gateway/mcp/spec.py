"""An MCP server named in a request's ``tools``: parsing, the redacted echo, the tool filters.

The tool object is OpenAI's MCPTool: ``{"type": "mcp", "server_label", "server_url",
"headers", "authorization", "allowed_tools", "require_approval", "server_description"}``.
Every problem is a 400 whose ``param`` names the field (``tools[2].server_url``).

Secrets: the values of ``authorization`` and ``headers`` live only in the McpServer held in
memory for the request (its ``repr`` leaves them out). What the ledger records and the
Response echoes is ``echo()``, where each value is ``"[redacted]"``; ``scrub`` removes them
from any text (an error message from a server or the HTTP stack) before it is recorded.
A URL with user info (``https://user:token@host``) is refused with a 400. Servers that take
their token in the query (``?api_key=...``) get the same treatment as headers: the echoed
``server_url`` keeps scheme, host and path, and each query value and a fragment are
``[redacted]`` (``redacted_url`` still masks user info, should one ever reach it). Path
segments are recorded as they are: a key in the path (``https://host/s/<key>/mcp``) would be
recorded in clear, so a secret belongs in ``authorization``, ``headers`` or the query, never
in the path.

``require_approval`` as an object: a tool matching ``always`` needs approval; else one
matching ``never`` does not; a tool matching neither needs approval unless the object names
only an ``always`` filter (then that filter is the list of tools needing it). A filter
(``{"tool_names", "read_only"}``) matches a tool when every criterion it sets holds;
``read_only`` compares with the tool's ``readOnlyHint`` annotation.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Optional, Union
from urllib.parse import urlsplit

import attrs
import orjson

from gateway.errors import invalid

REDACTED = "[redacted]"
LABEL = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # not allowed in a header value (tab is)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
HEADERS_MAX = 32  # headers one MCP tool may set
HEADER_VALUE_CHARS_MAX = 8_192
SERVER_URL_CHARS_MAX = 2_048
DESCRIPTION_CHARS_MAX = 4_096
FILTER_NAMES_MAX = 256  # tool names in one allowed_tools / require_approval filter
SECRET_CHARS_MIN = 3  # shorter header values are not scrubbed from messages (they would garble them)
# Headers the MCP transport sets itself; a request may not override them.
RESERVED_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection", "accept",
                    "mcp-session-id", "mcp-protocol-version", "last-event-id"}
FIELDS = {"type", "server_label", "server_url", "headers", "authorization", "allowed_tools", "require_approval",
          "server_description"}
UNSUPPORTED_FIELDS = {"connector_id", "tunnel_id"}
IGNORED_FIELDS = {"allowed_callers", "defer_loading"}


@attrs.frozen
class ToolFilter:
    """``{"tool_names", "read_only"}``: which tools of a server a rule applies to."""

    tool_names: Optional[tuple[str, ...]] = None
    read_only: Optional[bool] = None

    def matches(self, name: str, annotations: Optional[dict[str, Any]]) -> bool:
        if self.tool_names is not None and name not in self.tool_names:
            return False
        if self.read_only is not None and bool((annotations or {}).get("readOnlyHint")) != self.read_only:
            return False
        return True

    def echo(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tool_names is not None:
            out["tool_names"] = list(self.tool_names)
        if self.read_only is not None:
            out["read_only"] = self.read_only
        return out


@attrs.frozen
class ApprovalRules:
    """``require_approval`` as an object (see the module docstring for the rule)."""

    always: Optional[ToolFilter] = None
    never: Optional[ToolFilter] = None

    def needs_approval(self, name: str, annotations: Optional[dict[str, Any]]) -> bool:
        if self.always is not None and self.always.matches(name, annotations):
            return True
        if self.never is not None and self.never.matches(name, annotations):
            return False
        return not (self.always is not None and self.never is None)

    def echo(self) -> dict[str, Any]:
        return {k: f.echo() for k, f in (("always", self.always), ("never", self.never)) if f is not None}


def bearer(token: str) -> str:
    """The Authorization header for ``token``: OpenAI sends a bare token, Assistiv examples "Bearer ..."."""
    token = token.strip()
    return token if token[:7].lower() == "bearer " else "Bearer " + token


@attrs.frozen
class McpServer:
    """One ``mcp`` tool of a request; secrets stay out of ``repr`` and ``echo()``."""

    label: str
    url: str
    description: Optional[str] = None
    allowed: Union[None, list[str], ToolFilter] = None  # as given: a list of names or a filter
    approval: Union[str, ApprovalRules] = "always"
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    authorization: Optional[str] = attrs.field(default=None, repr=False)

    def allows(self, name: str, annotations: Optional[dict[str, Any]] = None) -> bool:
        """Whether ``allowed_tools`` lets the model see tool ``name``."""
        if self.allowed is None:
            return True
        if isinstance(self.allowed, list):
            return name in self.allowed
        return self.allowed.matches(name, annotations)

    def needs_approval(self, name: str, annotations: Optional[dict[str, Any]] = None) -> bool:
        if isinstance(self.approval, ApprovalRules):
            return self.approval.needs_approval(name, annotations)
        return self.approval != "never"

    def http_headers(self) -> dict[str, str]:
        """The headers to send to the server (secrets included: never record these)."""
        out = dict(self.headers)
        if self.authorization is not None:
            out["Authorization"] = bearer(self.authorization)
        return out

    def secrets(self) -> list[str]:
        """Every secret value, longest first (for ``scrub``)."""
        values = list(self.headers.values()) + url_secrets(self.url)
        if self.authorization is not None:
            values += [self.authorization, bearer(self.authorization), bearer(self.authorization)[7:]]
        return sorted({v for v in values if len(v) >= SECRET_CHARS_MIN}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with every secret value of this server replaced by ``[redacted]``."""
        for secret in self.secrets():
            text = text.replace(secret, REDACTED)
        return text

    def listing_key(self) -> str:
        """12 hex digits naming what a tool list depends on: the server (its redacted URL) and
        ``allowed_tools``. An ``mcp_list_tools`` item carries it in its id, so a later request
        with another URL or filter under the same label lists again (secrets are not in it)."""
        allowed = self.allowed.echo() if isinstance(self.allowed, ToolFilter) else self.allowed
        material = orjson.dumps([redacted_url(self.url), allowed], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(material).hexdigest()[:12]

    def echo(self) -> dict[str, Any]:
        """The tool as the ledger records it and the Response echoes it: secrets redacted."""
        allowed = self.allowed.echo() if isinstance(self.allowed, ToolFilter) else self.allowed
        approval = self.approval.echo() if isinstance(self.approval, ApprovalRules) else self.approval
        return {
            "type": "mcp",
            "server_label": self.label,
            "server_url": redacted_url(self.url),
            "server_description": self.description,
            "allowed_tools": allowed,
            "require_approval": approval,
            "headers": {name: REDACTED for name in self.headers} if self.headers else None,
            "authorization": REDACTED if self.authorization is not None else None,
        }


def _query_pairs(query: str) -> list[tuple[str, str, str]]:
    """``(key, "=" or "", value)`` for each ``&``-separated piece of a query string."""
    return [pair.partition("=") for pair in query.split("&") if pair]


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may carry a credential: query values, user info, fragment."""
    parts = urlsplit(url)
    values = [value for _, _, value in _query_pairs(parts.query) if value]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        values += [userinfo, *userinfo.split(":", 1)]
    if parts.fragment:
        values.append(parts.fragment)
    return [value for value in values if len(value) >= SECRET_CHARS_MIN]


def redacted_url(url: str) -> str:
    """``url`` as recorded: each query value, the user info and the fragment are ``[redacted]``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{key}={REDACTED}" if sep else key for key, sep, _ in _query_pairs(parts.query))
    out = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        out += "?" + query
    if parts.fragment:
        out += "#" + REDACTED
    return out


def _string(tool: dict, name: str, param: str, chars_max: int, required: bool = False) -> Optional[str]:
    value = tool.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        code = "missing_required_parameter" if value is None else "invalid_type"
        raise invalid(f"Missing or invalid '{param}.{name}': expected a non-empty string.", f"{param}.{name}", code)
    if len(value) > chars_max:
        raise invalid(f"Invalid '{param}.{name}': at most {chars_max} characters.", f"{param}.{name}",
                      "string_above_max_length")
    return value


def _filter(value: Any, param: str) -> ToolFilter:
    if not isinstance(value, dict) or set(value) - {"tool_names", "read_only"}:
        raise invalid(f"Invalid '{param}': expected {{\"tool_names\": [...], \"read_only\": bool}}.", param,
                      "invalid_value")
    names, read_only = value.get("tool_names"), value.get("read_only")
    if names is not None:
        names = _names(names, f"{param}.tool_names")
    if read_only is not None and not isinstance(read_only, bool):
        raise invalid(f"Invalid '{param}.read_only': expected a boolean.", f"{param}.read_only", "invalid_type")
    return ToolFilter(tuple(names) if names is not None else None, read_only)


def _names(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) and n for n in value):
        raise invalid(f"Invalid '{param}': expected an array of tool names.", param, "invalid_type")
    if len(value) > FILTER_NAMES_MAX:
        raise invalid(f"Invalid '{param}': at most {FILTER_NAMES_MAX} names.", param, "array_above_max_length")
    return list(value)


def _headers(value: Any, param: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid '{param}': expected an object of string values.", param, "invalid_type")
    if len(value) > HEADERS_MAX:
        raise invalid(f"Invalid '{param}': at most {HEADERS_MAX} headers.", param, "invalid_value")
    out = {}
    for name, header in value.items():
        # Never echo a header's value in an error: it may be a secret.
        if not HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
            raise invalid(f"Invalid '{param}': {name!r} is not a header name this tool may set.", param,
                          "invalid_value")
        if not isinstance(header, str) or len(header) > HEADER_VALUE_CHARS_MAX or CONTROL.search(header):
            raise invalid(f"Invalid '{param}.{name}': expected a one-line string of at most "
                          f"{HEADER_VALUE_CHARS_MAX} characters.", f"{param}.{name}", "invalid_value")
        out[name] = header
    return out


def _url(tool: dict, param: str) -> str:
    url = _string(tool, "server_url", param, SERVER_URL_CHARS_MAX, required=True)
    assert url is not None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"Invalid '{param}.server_url': expected an http(s) URL.", f"{param}.server_url",
                      "invalid_value")
    if parts.username is not None or parts.password is not None:
        raise invalid(f"Invalid '{param}.server_url': credentials go in 'authorization' or 'headers', not in the "
                      "URL.", f"{param}.server_url", "invalid_value")
    return url


def parse_mcp_tool(tool: dict, param: str) -> McpServer:
    """Validate one ``{"type": "mcp", ...}`` tool (400 naming the field)."""
    for name in tool:
        if name in UNSUPPORTED_FIELDS:
            raise invalid(f"Unsupported parameter: '{param}.{name}'. This gateway connects to MCP servers by "
                          "'server_url' only.", f"{param}.{name}", "unsupported_parameter")
        if name not in FIELDS and name not in IGNORED_FIELDS:
            raise invalid(f"Unknown parameter: '{param}.{name}'.", f"{param}.{name}", "unknown_parameter")
    label = tool.get("server_label")
    if label is None:
        raise invalid(f"Missing required parameter: '{param}.server_label'.", f"{param}.server_label",
                      "missing_required_parameter")
    if not isinstance(label, str) or not LABEL.match(label):
        raise invalid(f"Invalid '{param}.server_label': 1-64 letters, digits, '_' or '-'.", f"{param}.server_label",
                      "invalid_value")
    url = _url(tool, param)
    headers = _headers(tool.get("headers"), f"{param}.headers")
    authorization = tool.get("authorization")
    if authorization is not None and (not isinstance(authorization, str) or not authorization.strip()
                                      or len(authorization) > HEADER_VALUE_CHARS_MAX
                                      or CONTROL.search(authorization)):
        raise invalid(f"Invalid '{param}.authorization': expected a one-line token string (no control "
                      "characters).", f"{param}.authorization", "invalid_value")
    if authorization is not None and any(name.lower() == "authorization" for name in headers):
        raise invalid(f"Invalid '{param}': set 'authorization' or an Authorization header, not both.",
                      f"{param}.headers", "invalid_value")
    allowed_raw = tool.get("allowed_tools")
    allowed: Union[None, list[str], ToolFilter] = None
    if isinstance(allowed_raw, list):
        allowed = _names(allowed_raw, f"{param}.allowed_tools")
    elif allowed_raw is not None:
        allowed = _filter(allowed_raw, f"{param}.allowed_tools")
    approval_raw = tool.get("require_approval", "always")
    approval: Union[str, ApprovalRules]
    if approval_raw is None or approval_raw in ("always", "never"):
        approval = approval_raw or "always"
    elif isinstance(approval_raw, dict) and approval_raw and not set(approval_raw) - {"always", "never"}:
        rules = {k: _filter(v, f"{param}.require_approval.{k}") for k, v in approval_raw.items() if v is not None}
        approval = ApprovalRules(**rules)
    else:
        raise invalid(f"Invalid '{param}.require_approval': expected 'always', 'never' or "
                      "{\"always\": {...}, \"never\": {...}}.", f"{param}.require_approval", "invalid_value")
    description = _string(tool, "server_description", param, DESCRIPTION_CHARS_MAX)
    return McpServer(label, url, description, allowed, approval, headers, authorization)
