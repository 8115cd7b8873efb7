"""The transport stands below the plugin API: it imports nothing of plugins, exchanges or
configs, only the gateway's errors and redaction helpers.  (The modules are read, not
imported: an import hidden under ``TYPE_CHECKING`` counts too.)"""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.transport

PACKAGE = Path(gateway.transport.__file__).parent
#: What the transport may import from the gateway besides itself.
ALLOWED = {"gateway.errors", "gateway.redaction"}


def gateway_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "gateway" or name.startswith("gateway.")}


def test_the_transport_imports_only_errors_and_redaction_from_the_gateway() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 8  # the package was found, with its modules
    for module in modules:
        outside = {
            name for name in gateway_imports(module) if not name.startswith("gateway.transport")
        }
        assert outside <= ALLOWED, f"{module.name} imports {sorted(outside - ALLOWED)}"
