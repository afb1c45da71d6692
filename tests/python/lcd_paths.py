"""Where the Python oracle tests find lcd's C++ driver programs (tests/python/cpp)."""
import os

import lcd_skip


def driver(name):
    """Path of the driver `name` in LCD_BUILD_DIR/bin; skips outside ctest."""
    build = os.environ.get("LCD_BUILD_DIR")
    if not build:
        lcd_skip.skip("LCD_BUILD_DIR not set (run through ctest)")
    path = os.path.join(build, "bin", name)
    assert os.path.exists(path), f"{path} not built (ninja {name})"
    return path


def lcd_tool():
    """Path of the `lcd` CLI in LCD_BUILD_DIR/tools; skips outside ctest."""
    build = os.environ.get("LCD_BUILD_DIR")
    if not build:
        lcd_skip.skip("LCD_BUILD_DIR not set (run through ctest)")
    path = os.path.join(build, "tools", "lcd")
    assert os.path.exists(path), f"{path} not built (ninja lcd)"
    return path
