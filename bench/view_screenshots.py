"""The screenshots of docs/viewer.md: a `hindsight view` site's pages in headless Chromium.

    .venv/bin/python bench/view_screenshots.py SITE RUN_KEY [--signal DOC_KEY] [--out docs/]

SITE is a folder written by `hindsight view`; RUN_KEY the run's key there (its folder name); DOC_KEY a signal figure's
data key (RUN_KEY/signal-NAME). Writes view-index.png, view-run.png (curves and held-out answers), view-interactions.png
(the first complained-about answers of the treated arm, tokens coloured by advantage) and view-signal.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("site", type=Path)
    parser.add_argument("run")
    parser.add_argument("--signal", default=None)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    home = (args.site.resolve() / "index.html").as_uri()
    shots = [("view-index.png", "", "index", None), ("view-run.png", f"#page=run&run={args.run}", "run", 2300),
             ("view-interactions.png", f"#page=interactions&run={args.run}&arm=treated&satisfied=no", "interactions", 1500)]
    if args.signal:
        shots.append(("view-signal.png", f"#page=signal&doc={args.signal}", "signal", None))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        for name, fragment, page_name, height in shots:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
            page.goto(home + fragment)
            page.wait_for_selector(f"body[data-ready='{page_name}']", timeout=30_000)
            if height:
                page.set_viewport_size({"width": 1440, "height": height})
            page.screenshot(path=str(args.out / name), full_page=height is None)
            print(f"wrote {args.out / name}")
        browser.close()


if __name__ == "__main__":
    main()
