"""The seams hold: the Azure SDK is reached only through ``vmssctl/azure.py``; the planner, ``decide`` and the
engine (written against ``gateway.Gateway``) load no SDK."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "vmssctl"


def test_only_azure_py_imports_the_sdk():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "azure.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(SRC)}: {n}" for n in names if n == "azure" or n.startswith("azure.")]
    assert offenders == []


def test_pure_modules_load_no_sdk():
    code = ("import sys, vmssctl.plan, vmssctl.policy, vmssctl.target, vmssctl.inputs, vmssctl.rollout.progress, "
            "vmssctl.gateway, vmssctl.rollout.decide, vmssctl.rollout.strategies, vmssctl.rollout.engine; "
            "print(sorted(m for m in sys.modules if m == 'azure' or m.startswith('azure.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_sdk_errors_become_vmssctl_errors():
    from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

    from vmssctl.azure import translate
    from vmssctl.errors import ArmError, Conflict, NotFound, PreconditionFailed

    class Response:
        def __init__(self, status: int) -> None:
            self.status_code, self.reason, self.headers = status, "x", {}

        def text(self) -> str:
            return ""

    assert isinstance(translate(ResourceNotFoundError("gone")), NotFound)
    assert isinstance(translate(ResourceModifiedError("etag")), PreconditionFailed)
    conflict = HttpResponseError("busy", response=Response(409))
    assert isinstance(translate(conflict), Conflict) and translate(conflict).exit_code == 1
    bad = translate(HttpResponseError("bad", response=Response(400)))
    assert type(bad) is ArmError and bad.exit_code == 2


def test_the_engine_knows_no_strategy():
    """Strategies own their turn: the engine carries out generic effects and names no strategy, nor asks the
    policy which one it is (a new strategy is a new file, not an edit of the engine)."""
    engine = (SRC / "rollout" / "engine.py").read_text()
    for name in ("AZURE_ROLLING", "surge", "in-place", "InPlace", "Surge", "AzureRolling", "policy.strategy",
                 "surging", "ready_times", "rolling_status() if"):
        assert name not in engine, name


def test_no_wait_in_the_engine_is_real_time():
    """Soak and pause are phase state decide answers with a Wait; every wait is on the rollout's clock."""
    engine = (SRC / "rollout" / "engine.py").read_text()
    assert "time.sleep" not in engine and "import time" not in engine
