#!/usr/bin/env python3
"""Checks the dependency table of DESIGN.md / STYLE.md on every source file.

Each module may include the public headers (lcd/<m>/...) of the modules
listed for it below and nothing else of ours; tests/<m> may use what <m> may
use plus <m> itself and kernels/reference. Private headers of another module
("src/..." paths) are never reachable. Exits 1 listing every violation.
"""
import pathlib
import re
import sys

ALLOWED = {
    "base": {"base"},
    "kernels": {"base", "kernels"},
    "runtime": {"base", "kernels", "runtime"},
    "quantizer": {"base", "kernels", "runtime", "quantizer"},
    "proto": set(),
    "server": {"base", "kernels", "runtime", "quantizer", "server", "v1"},
    "tools": {"base", "kernels", "runtime", "quantizer", "server", "v1"},
}
# Headers nobody outside a module may use, whatever the table says.
FORBIDDEN_EVERYWHERE_BUT_SERVER = re.compile(r'#include\s*[<"](grpcpp?/|google/protobuf/)')
INCLUDE = re.compile(r'#include\s*"lcd/(\w+)/')
SOURCE_EXT = {".h", ".cc", ".cu", ".cuh"}


def module_of(path: pathlib.Path):
    parts = path.parts
    if parts[0] == "tests" and len(parts) > 2:
        return "tests", parts[1]
    return parts[0], None


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    errors = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix not in SOURCE_EXT or rel.parts[0].startswith("build") or rel.parts[0].startswith("."):
            continue
        top, sub = module_of(rel)
        if top == "tests":
            base = ALLOWED.get(sub, ALLOWED["tools"]) | {sub}
            allowed = base
        elif top in ALLOWED:
            allowed = ALLOWED[top]
        else:
            continue
        text = path.read_text(errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            m = INCLUDE.search(line)
            if m and m.group(1) not in allowed:
                errors.append(f"{rel}:{lineno}: {top}{'/' + sub if sub else ''} may not include lcd/{m.group(1)}/")
            if top in ("kernels", "runtime", "quantizer", "base") and FORBIDDEN_EVERYWHERE_BUT_SERVER.search(line):
                errors.append(f"{rel}:{lineno}: {top} may not include gRPC/protobuf")
            if top != "tests" and '#include "src/' in line and not str(rel).startswith(top):
                errors.append(f"{rel}:{lineno}: reaches into another module's src/")
    for e in errors:
        print(e)
    print(f"check_deps: {len(errors)} violation(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
