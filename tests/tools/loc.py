#!/usr/bin/env python3
"""Lines of code in engine/src and ts-wrapper/src, non-test and test separately.

Used for the simplification issue's before/after figures. A Rust line is a test line when its file is
a `tests.rs` (or under a `tests/` folder) or when it belongs to an item marked `#[cfg(test)]` (found by
brace counting from the attribute; string literals with braces may shift a count by a line, which is
noise at this scale). The generated IPC types are reported apart: nobody writes them.

Usage: tests/tools/loc.py [REPO]   (default: the repository this script is in)
"""
import pathlib
import sys


def rust_counts(path: pathlib.Path) -> tuple[int, int]:
    lines = path.read_text().splitlines()
    if path.name == "tests.rs" or "tests" in path.parts[:-1]:
        return 0, len(lines)
    code = test = 0
    depth = None  # brace depth inside a #[cfg(test)] item, None outside
    opened = False
    for line in lines:
        if depth is None and line.strip().startswith("#[cfg(test)]"):
            depth, opened = 0, False
        if depth is not None:
            test += 1
            depth += line.count("{") - line.count("}")
            opened = opened or "{" in line
            if (opened and depth <= 0) or (not opened and line.rstrip().endswith(";")):
                depth = None
        else:
            code += 1
    return code, test


def main() -> None:
    repo = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[2])
    code = test = 0
    for path in sorted((repo / "engine/src").rglob("*.rs")):
        c, t = rust_counts(path)
        code, test = code + c, test + t
    print(f"engine/src       non-test {code:6}  test {test:6}")
    ts = gen = 0
    for path in sorted((repo / "ts-wrapper/src").rglob("*.ts")):
        n = len(path.read_text().splitlines())
        if "generated" in path.parts:
            gen += n
        else:
            ts += n
    tests = sum(len(p.read_text().splitlines()) for p in (repo / "ts-wrapper/test").rglob("*.ts"))
    print(f"ts-wrapper/src   non-test {ts:6}  test {tests:6} (ts-wrapper/test)  generated {gen}")


if __name__ == "__main__":
    main()
