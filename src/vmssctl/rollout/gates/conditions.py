"""Conditions on a measured value, as Argo Rollouts' analysis writes them: ``result < 0.05``,
``result >= 0.99 and result <= 1``, ``result == true``. Parsed once (a bad one is a usage error) and evaluated
without ``eval``: only comparisons of ``result`` with constants, joined by and/or/not."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from vmssctl import inputs
from vmssctl.errors import UsageError

_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Eq,
          ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Name, ast.Load, ast.Constant)
_COMPARE = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
            ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}


@dataclass(frozen=True)
class Condition:
    text: str
    tree: ast.Expression = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: object, what: str) -> Condition:
        source = inputs.text(text, what, 256)
        try:
            tree = ast.parse(re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", source)), mode="eval")
        except SyntaxError:
            raise UsageError(f"{what} '{inputs.shown(source)}' is not a condition such as 'result < 0.05'") from None
        for node in ast.walk(tree):
            if not isinstance(node, _NODES) or (isinstance(node, ast.Name) and node.id not in ("result", "True",
                                                                                               "False")):
                raise UsageError(f"{what} '{inputs.shown(source)}': only comparisons of 'result' with numbers, "
                                 "strings or true/false, joined by and/or/not")
        return cls(source, tree)

    def holds(self, result: object) -> bool:
        return bool(_eval(self.tree.body, result))


def _eval(node: ast.AST, result: object) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return {"result": result, "True": True, "False": False}[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, result)
        return (not value) if isinstance(node.op, ast.Not) else -value  # type: ignore[operator]
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, result) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, result)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, result)
            try:
                ok = _COMPARE[type(op)](left, right)
            except TypeError:  # e.g. a string against a number: the measurement does not satisfy it
                return False
            if not ok:
                return False
            left = right
        return True
    raise ValueError(f"unsupported condition node {type(node).__name__}")
