"""Reading (not verifying) the expiry of a ChatGPT JWT access token."""

from __future__ import annotations

import base64
import binascii
import json


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, or ``None`` when ``token`` is not a readable JWT.

    The payload is URL-safe base64 without padding (RFC 7515), which plain
    ``b64decode`` would reject or misread.  Anyone may send a token, so a payload
    built to break its reader (nested thousands deep, an ``exp`` no float can hold)
    is only "not a readable JWT".
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    try:
        return float(exp)
    except OverflowError:  # an integer of hundreds of digits
        return None
