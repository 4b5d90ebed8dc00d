"""The ops page's session cookie: Flask's signed cookie, marked Secure whenever the page
was reached over HTTPS (directly or through a proxy that says so)."""

from __future__ import annotations

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface


class OpsSessionInterface(SecureCookieSessionInterface):
    """Sets `Secure` per request, so local HTTP development still works.

    Trusting `X-Forwarded-Proto` here is harmless: it can only make the cookie stricter.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        if request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https":
            return True
        return super().get_cookie_secure(app)
