"""API errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Raise ``ApiError`` anywhere on the request path; the app turns it into the JSON body and
status. Constructors below name the documented cases of CONTRACT.md.
"""

from __future__ import annotations

from typing import Any, Optional


class ApiError(Exception):
    """An error answer: HTTP status plus the four fields of the error object."""

    def __init__(
        self,
        status: int,
        message: str,
        code: Optional[str] = None,
        param: Optional[str] = None,
        type_: str = "invalid_request_error",
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: Optional[str] = None, code: Optional[str] = None) -> ApiError:
    """400: malformed or invalid request field."""
    return ApiError(400, message, code=code, param=param)


def unauthorized(message: str = "Missing or invalid API key.") -> ApiError:
    return ApiError(401, message, code="invalid_api_key")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, code="permission_denied", type_="permission_error")


def not_found(message: str, code: str = "not_found", param: Optional[str] = None) -> ApiError:
    return ApiError(404, message, code=code, param=param)
