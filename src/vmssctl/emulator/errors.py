"""The one exception the simulation raises; ``arm`` turns it into ARM's error envelope."""

from __future__ import annotations


class ArmError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        target: str | None = None,
        details: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict:
        err: dict = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        if self.details:
            err["details"] = self.details
        return {"error": err}


def invalid(message: str, target: str | None = None) -> ArmError:
    return ArmError(400, "InvalidParameter", message, target)


def not_found(kind: str, name: str, rg: str | None = None) -> ArmError:
    where = f" under resource group '{rg}'" if rg else ""
    return ArmError(404, "ResourceNotFound", f"The Resource '{kind}/{name}'{where} was not found.")


def conflict(message: str, code: str = "OperationNotAllowed") -> ArmError:
    return ArmError(409, code, message)
