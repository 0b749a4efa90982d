"""Review dashboard speed on 2,000 items: first queue page, next page, item view (Streamlit AppTest).

Builds a synthetic project of 2,000 flagged items per docs/CONTRACTS.md (320x240 photos, masks, QA report,
review queue, 1,000 decisions in the SQLite store), then renders the app headless with
``streamlit.testing.v1.AppTest`` (the same script run a browser session triggers, minus the websocket):

- ``queue_cold_s``: first queue page with an empty thumbnail cache (24 thumbnails rendered) -- target < 2 s;
- ``queue_warm_s``: the same page again in a new session (thumbnails read back from the disk cache);
- ``next_page_s``: paging to page 2 (24 new thumbnails); ``item_view_s``: opening an item;
- ``baseline_s``: the floor, reading and decoding the 24 photos of the page once (no app at all).

usage: .venv/bin/python benchmarks/dashboard.py [--items 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import finish  # noqa: E402

TARGET_FIRST_PAGE_S = 2.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    from streamlit.testing.v1 import AppTest

    from dashboards import data
    from pipeline.core import io
    from qa.decision_store import DecisionStore
    from tests.dashboard.synth import make_project

    app_file = str(REPO / "dashboards" / "review.py")
    with tempfile.TemporaryDirectory(prefix="maskloop-dash-bench-") as tmp:
        t0 = time.perf_counter()
        project = make_project(Path(tmp) / "proj", n=args.items, flag_every=1, size=(320, 240),
                               with_matting=False)
        store = DecisionStore(data.open_project(project.params).review_db)
        store.import_rows([])  # create
        from qa.decisions import ReviewDecision

        store.import_rows([ReviewDecision(i + 1, iid, "accept", "", "", "bench", f"2026-01-01T00:00:{i % 60:02d}Z", "")
                           for i, iid in enumerate(project.item_ids[: args.items // 2])])
        print(f"built {args.items} items in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        os.environ["MASKLOOP_PARAMS"] = str(project.params)
        os.environ["MASKLOOP_REVIEWER"] = "bench"
        proj = data.open_project(project.params)

        cold, warm, nxt, item, base = [], [], [], [], []
        for rep in range(args.repeats):
            # a fresh, empty thumbnail cache each repeat
            thumbs = proj.thumbs
            if thumbs.exists():
                import shutil

                shutil.rmtree(thumbs)
            data._TABLES.clear()
            at = AppTest.from_file(app_file, default_timeout=120)
            t = time.perf_counter()
            at.run()
            cold.append(time.perf_counter() - t)
            if at.exception:
                sys.exit(f"app raised: {at.exception}")
            page_ids = [b.key[5:] for b in at.button if b.key and b.key.startswith("open_")]
            if len(page_ids) != 24:
                sys.exit(f"expected 24 cards on the first page, got {len(page_ids)}")
            at2 = AppTest.from_file(app_file, default_timeout=120)
            t = time.perf_counter()
            at2.run()
            warm.append(time.perf_counter() - t)
            t = time.perf_counter()
            at2.button(key="page_next").click().run()
            nxt.append(time.perf_counter() - t)
            page2 = [b.key[5:] for b in at2.button if b.key and b.key.startswith("open_")]
            if not page2 or set(page2) & set(page_ids):
                sys.exit("page 2 does not show a new set of items")
            t = time.perf_counter()
            at2.button(key=f"open_{page2[0]}").click().run()
            item.append(time.perf_counter() - t)
            if at2.exception or at2.session_state["view"] != "Item":
                sys.exit(f"item view failed: {at2.exception}")
            q = data.load_queue(proj)
            paths = list(data.filter_queue(q, data.Filters())["image_path"][:24])
            t = time.perf_counter()
            for pth in paths:
                io.read_image(Path(pth))
            base.append(time.perf_counter() - t)
            print(f"repeat {rep + 1}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s, next {nxt[-1]:.2f} s, "
                  f"item {item[-1]:.2f} s, baseline {base[-1]:.3f} s", file=sys.stderr)

    med = statistics.median
    figures = {
        "items": args.items, "queue_cold_s": med(cold), "queue_warm_s": med(warm), "next_page_s": med(nxt),
        "item_view_s": med(item), "baseline_s": med(base), "cold_vs_baseline": med(cold) / med(base),
        "target_first_page_s": TARGET_FIRST_PAGE_S,
    }
    failures = []
    if med(cold) >= TARGET_FIRST_PAGE_S:
        failures.append(f"first queue page took {med(cold):.2f} s (target < {TARGET_FIRST_PAGE_S} s)")
    finish(figures, failures)


if __name__ == "__main__":
    main()
