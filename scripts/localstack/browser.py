"""The browser for the Airflow UI tests: Debian's ``chromium`` and ``chromium-driver``, driven by Selenium.

``PYTHONPATH=scripts python3 -m localstack.browser`` installs them when missing (as root, on Debian) and
prints where they are; when both are present it only looks them up (no apt, well under a second). Elsewhere
it says what to install. The tests read ``IMAGEGATE_CHROMIUM`` / ``IMAGEGATE_CHROMEDRIVER`` when set, else
find the same two programs on ``PATH``.
"""

from __future__ import annotations

import sys

from .host import StackError, apt_install, is_debian, is_root, say, set_voice, which

PACKAGES = ["chromium", "chromium-driver"]
# Debian's chromium package installs /usr/bin/chromium; other systems name it differently.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER = "chromedriver"


def find() -> tuple[str, str] | None:
    """The browser and its driver when both are installed, else None."""
    browser = next((path for path in map(which, BROWSERS) if path), None)
    driver = which(DRIVER)
    return (browser, driver) if browser and driver else None


def ensure() -> tuple[str, str]:
    """The browser and its driver, installed with apt-get when missing (root on Debian only)."""
    found = find()
    if found:
        return found
    why = "the Airflow UI tests need a headless browser (chromium) and its WebDriver (chromedriver)"
    if not is_debian() or not is_root():
        raise StackError(
            f"{why}, and they are missing. Install them and re-run:\n"
            f"    sudo apt-get install -y {' '.join(PACKAGES)}   (Debian/Ubuntu)\n"
            "or any Chromium/Chrome with the matching chromedriver on PATH"
        )
    apt_install(PACKAGES, why)
    found = find()
    if not found:
        raise StackError(f"chromium or chromedriver is still missing after installing {' '.join(PACKAGES)}")
    return found


def main() -> int:
    set_voice("browser", detach_closed_stdout=False)
    try:
        browser, driver = ensure()
    except StackError as exc:
        print(f"[browser] {exc}", file=sys.stderr)
        return 1
    say(f"browser {browser}, driver {driver}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
