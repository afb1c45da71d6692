"""Skips cannot hide in CI: every skip in tests/ goes through the helpers
(tests/lcd_skip.h, tests/python/lcd_skip.py), and under CI=true a skip for
missing data or a missing tool fails (only GPU and sanitizer-build skips
stay skips). Checked on the real helpers: a pytest run and a real gtest
binary, each with and without CI=true.
"""
import os
import re
import subprocess
import sys
import textwrap

import lcd_skip

SOURCE_DIR = os.environ.get("LCD_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TESTS = os.path.join(SOURCE_DIR, "tests")
HELPERS = {os.path.join(TESTS, "lcd_skip.h"), os.path.join(TESTS, "python", "lcd_skip.py"),
           os.path.abspath(__file__)}
BARE = re.compile(r"GTEST_SKIP\s*\(|pytest\.skip\s*\(|pytest\.importorskip\s*\(|pytest\.mark\.skip|unittest\.skip")


def test_no_bare_skips_in_tests():
    offenders = []
    for root, _, files in os.walk(TESTS):
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith((".cc", ".h", ".cu", ".py")) or path in HELPERS:
                continue
            with open(path, errors="replace") as f:
                for n, line in enumerate(f, 1):
                    if BARE.search(line):
                        offenders.append(f"{os.path.relpath(path, SOURCE_DIR)}:{n}: {line.strip()}")
    assert not offenders, "skip through LCD_SKIP / lcd_skip.skip instead:\n" + "\n".join(offenders)


def env(ci):
    e = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        e["CI"] = "true"
    return e


def test_python_skip_fails_under_ci(tmp_path):
    test = tmp_path / "test_needs_data.py"
    test.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import lcd_skip

        def test_data():
            lcd_skip.skip("no data here")

        def test_module():
            lcd_skip.importorskip("no_such_module_lcd")

        def test_gpu():
            lcd_skip.skip("no GPU", gpu=True)
    """))
    run = lambda ci: subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                                    capture_output=True, text=True, env=env(ci), cwd=tmp_path, timeout=120)
    local = run(False)
    assert local.returncode == 0 and "3 skipped" in local.stdout, local.stdout
    ci = run(True)
    assert ci.returncode == 1, ci.stdout
    assert "2 failed, 1 skipped" in ci.stdout, ci.stdout
    assert "CI=true turns this skip into a failure: no data here" in ci.stdout


def test_cpp_skip_fails_under_ci(tmp_path):
    build = os.environ.get("LCD_BUILD_DIR")
    binary = os.path.join(build or "", "tests", "server_config_test")
    if not os.path.exists(binary):
        lcd_skip.skip(f"{binary} not built")
    # An LCD_SOURCE_DIR without the example config: the test's data is missing.
    args = [binary, "--gtest_filter=Config.ExampleFileIsValidAndComplete"]
    run = lambda ci: subprocess.run(args, capture_output=True, text=True, timeout=120,
                                    env={**env(ci), "LCD_SOURCE_DIR": str(tmp_path)})
    local = run(False)
    assert local.returncode == 0 and "[  SKIPPED ] 1 test" in local.stdout, local.stdout
    ci = run(True)
    assert ci.returncode != 0, ci.stdout
    assert "CI=true turns this skip into a failure" in ci.stdout and "[  FAILED  ] 1 test" in ci.stdout, ci.stdout
