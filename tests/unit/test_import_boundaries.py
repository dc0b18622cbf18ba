"""Dependencies point down the architecture picture; nothing imports upward."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> meterline packages it may import (besides itself and meterline.errors)
ALLOWED = {
    "protocols": {"ingest.model"},
    "ingest": {"protocols", "store", "config"},
    "store": {"config"},
    # the billing run posts its bills (ledger.bills) and raises VEE's master–sub alert (the alerts module)
    "rating": {"store", "config", "ledger", "ingest.vee.alerts", "ingest.vee.engine"},
    "ledger": {"store", "config"},
    "exporters": {"ledger", "rating", "store", "config", "ingest"},
    "config": set(),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m.startswith("meterline.")}


def test_no_upward_imports() -> None:
    problems = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            for module in _imports(path):
                target = module.removeprefix("meterline.")
                if target == "errors" or target.split(".")[0] == package:
                    continue
                if any(target == a or target.startswith(a + ".") for a in allowed):
                    continue
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not problems, "\n".join(problems)
