#!/usr/bin/env python3
"""Layering of the engine (issue Architecture II): the roles (`hub/`, `edge/`) never import each
other, and shared code (everything else) never imports a role. Reads every `crate::` path in
engine/src (in `use` lines and inline paths, comments and doc comments skipped) and prints each
import that breaks a rule; exits 1 if there is one. The binary's entry points (`main.rs`,
`service.rs`, `daemon.rs`, `ipc/`, `fuzzing.rs`) start the roles and may import them, and so may the
crate's facades (`lib.rs`, and `testing.rs`, which re-exports for the integration tests)."""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "engine", "src")
ROLES = {"hub", "edge"}
# What starts or drives the roles: allowed to import them.
ENTRY = {"main.rs", "lib.rs", "testing.rs", "service.rs", "daemon.rs", "ipc", "fuzzing.rs"}
PATH = re.compile(r"\bcrate::(\{[^}]*\}|\w+)")


def top(rel):
    """The first component of a path below engine/src (`hub`, `udp`, `config.rs`, ...)."""
    return rel.split(os.sep)[0]


def module_of(top_name):
    return top_name[:-3] if top_name.endswith(".rs") else top_name


def imported_modules(text):
    """Top-level modules named by `crate::` paths in code (not in comments)."""
    code = "\n".join(line.split("//", 1)[0] for line in text.splitlines())
    found = set()
    for match in PATH.finditer(code):
        target = match.group(1)
        if target.startswith("{"):
            found.update(part.strip().split("::")[0] for part in target[1:-1].split(",") if part.strip())
        else:
            found.add(target)
    return found


def violations():
    found = []
    for root, _, files in os.walk(SRC):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, SRC)
            layer = top(rel)
            if layer in ENTRY:
                continue
            importer = module_of(layer)
            for module in sorted(imported_modules(open(path).read())):
                if module not in ROLES or module == importer:
                    continue
                kind = "role imports another role" if importer in ROLES else "shared code imports a role"
                found.append(f"{rel}: {kind}: crate::{module}")
    return found


def main():
    found = violations()
    for line in found:
        print(line)
    print(f"{len(found)} layering violation(s)" if found else "layering: no role-to-role or shared-to-role import")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
