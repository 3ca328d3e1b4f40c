"""vmssctl's own errors and the exit codes they map to.

Everything the user sees ends in one line and one of these codes; no module outside
``azure.py`` needs to know what the SDK raises.
"""

from __future__ import annotations

import re

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3


class VmssctlError(Exception):
    """A failure reported on one line; ``exit_code`` says how the process ends."""

    exit_code = EXIT_FAILED


class UsageError(VmssctlError):
    """Bad input from the user: reported on one line, exit code 2, nothing changed."""

    exit_code = EXIT_USAGE


class NotConfirmed(VmssctlError):
    """The person asked said no: nothing was changed (exit 3, as an abort)."""

    exit_code = EXIT_ABORTED


class ArmError(VmssctlError):
    """ARM refused or failed a call (after the SDK's own retries): its HTTP status, code and message.

    ``azure.py`` raises these in place of the SDK's exceptions, so nothing else depends on the SDK's types.
    """

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        # bad requests and missing resources are the caller's input; everything else is a failure
        self.exit_code = EXIT_USAGE if status in (400, 401, 403, 404) else EXIT_FAILED


class NotFound(ArmError):
    """404: the resource group or scale set does not exist."""


class Forbidden(ArmError):
    """403: the credential lacks a permission; ``action`` names it when ARM said which (AuthorizationFailed)."""

    def __init__(self, message: str, status: int | None = 403, code: str | None = None) -> None:
        super().__init__(message, status, code)
        found = re.search(r"perform action '([^']{1,200})'", message)
        self.action = found.group(1) if found else None


class Conflict(ArmError):
    """409: another operation is in progress on the resource."""


class PreconditionFailed(ArmError):
    """412: the resource changed since its etag was read (If-Match)."""


class Unreachable(ArmError):
    """No answer from the ARM endpoint at all (DNS, TLS, connection refused)."""
