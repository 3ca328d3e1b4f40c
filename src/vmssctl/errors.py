"""vmssctl's own errors and the exit codes they map to.

Everything the user sees ends in one line and one of these codes; no module outside
``azure.py`` needs to know what the SDK raises.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3


class VmssctlError(Exception):
    """A failure reported on one line; ``exit_code`` says how the process ends."""

    exit_code = EXIT_FAILED


class UsageError(VmssctlError):
    """Bad input from the user: reported on one line, exit code 2, nothing changed."""

    exit_code = EXIT_USAGE
