"""The one thing the server's routes share: the service, set on the app's state."""

from __future__ import annotations

from fastapi import Request

from shesha.service import Service


def service(request: Request) -> Service:
    value: Service = request.app.state.service
    return value
