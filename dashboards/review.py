"""The maskloop review dashboard (Streamlit): queue, item view, overview.

Started by ``maskloop review`` (which sets ``MASKLOOP_PARAMS`` and ``MASKLOOP_REVIEWER``); can also be run
directly with ``MASKLOOP_PARAMS=params.yaml streamlit run dashboards/review.py``.

Keyboard (when no text field has focus): ``a`` accept, ``f`` apply the suggested fix, ``x`` reject with the
reason typed, ``j`` / ``k`` next / previous item, ``q`` back to the queue.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboards import data, render
from dashboards.safe import html_text, md_text
from pipeline.core import io
from qa import reviewers as auth
from qa.decision_store import DecisionStore, StoreError

log = logging.getLogger("dashboards.review")

PAGES = ("Queue", "Item", "Overview")
PAGE_SIZES = (12, 24, 48, 96)
THUMB_W, THUMB_H = 320, 220
VIEW_W, VIEW_H = 860, 600  # the item view's picture box (px)
REJECT_REASONS = (
    "",
    "mask misses part of the object",
    "mask includes background",
    "edges inaccurate (hair, fur, fine detail)",
    "wrong object segmented",
    "image unusable (blur, duplicate, out of scope)",
)
STATUS_LABEL = {"": "undecided", "accept": "accepted", "reject": "rejected", "fix": "fix applied"}
STATUS_COLOUR = {"": "gray", "accept": "green", "reject": "red", "fix": "blue"}

CSS = """
<style>
.block-container {padding-top: 3.2rem; padding-bottom: 2rem; max-width: 1500px;}
div[data-testid="stMetricValue"] {font-size: 1.6rem;}
.ml-card-title {font-family: ui-monospace, monospace; font-size: 0.82rem; font-weight: 600; margin: 0.2rem 0 0 0;}
.ml-muted {color: #6b7280; font-size: 0.8rem;}
.ml-kv {font-size: 0.88rem; line-height: 1.55;}
.ml-kv b {color: #374151; display: inline-block; min-width: 7.5rem;}
.ml-legend span {display: inline-block; width: 0.8rem; height: 0.8rem; border-radius: 2px; margin: 0 0.25rem 0 0.8rem;
  vertical-align: middle;}
kbd {background: #f3f4f6; border: 1px solid #d1d5db; border-bottom-width: 2px; border-radius: 4px; padding: 0 0.3rem;
  font-size: 0.75rem;}
</style>
"""


# --------------------------------------------------------------------------- state and loading


def _project() -> data.Project:
    params = Path(os.environ.get("MASKLOOP_PARAMS", "params.yaml"))
    return data.open_project(params)


def _store(project: data.Project) -> DecisionStore:
    return DecisionStore(project.review_db)


def _init_state() -> None:
    ss = st.session_state
    ss.setdefault("view", "Queue")
    ss.setdefault("item_id", "")
    ss.setdefault("page", 1)
    ss.setdefault("reviewer", os.environ.get("MASKLOOP_REVIEWER", ""))
    ss.setdefault("flash", "")


def _rgb(path: Path) -> np.ndarray:
    return io.read_image(path)


def _plane(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    """A single-channel map resized to ``shape`` if needed (None when absent or unreadable)."""
    if path is None:
        return None
    try:
        arr = io.read_gray(path)
    except (OSError, ValueError) as exc:
        st.warning(f"{md_text(path)}: cannot read ({md_text(exc)})")
        return None
    if arr.shape != shape:
        st.warning(f"{md_text(path.name)}: {arr.shape[1]}x{arr.shape[0]}, image is {shape[1]}x{shape[0]}; "
                   "shown rescaled")
        import cv2

        arr = cv2.resize(arr, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return arr


def _filters_from_state() -> data.Filters:
    ss = st.session_state
    return data.Filters(
        checks=tuple(ss.get("f_checks", ())), severities=tuple(ss.get("f_severity", ())),
        annotators=tuple(ss.get("f_annotator", ())), model_versions=tuple(ss.get("f_model", ())),
        splits=tuple(ss.get("f_split", ())), status=tuple(ss.get("f_status", ())),
        search=str(ss.get("f_search", "")), sort_by=ss.get("f_sort", "severity"),
        descending=bool(ss.get("f_desc", True)),
    )


def _reset_page() -> None:
    st.session_state["page"] = 1


def _open_item(item_id: str) -> None:
    st.session_state["item_id"] = item_id
    st.session_state["view"] = "Item"


def _go(view: str) -> None:
    st.session_state["view"] = view


# --------------------------------------------------------------------------- sidebar


def sidebar(queue_all: pd.DataFrame) -> None:
    with st.sidebar:
        st.markdown("### maskloop review")
        st.radio("Page", PAGES, key="view", horizontal=True, label_visibility="collapsed")
        signed_in = st.session_state.get("signed_in", "")
        if signed_in:
            st.caption(f"Signed in as **{md_text(signed_in)}**")
            st.button("Sign out", key="sign_out", on_click=_sign_out)
        else:
            st.text_input("Reviewer", key="reviewer", help="Your name, stored with every decision.")
        st.divider()
        st.markdown("**Queue filters**")
        st.toggle("Include unflagged items", key="f_all", on_change=_reset_page,
                  help="List every item, not only those QA flagged, to review any item on demand.")
        st.multiselect("Status", data.STATUS_CHOICES, key="f_status", on_change=_reset_page,
                       format_func=lambda s: STATUS_LABEL.get("" if s == "undecided" else s, s))
        for key, label, column in (
            ("f_checks", "Check", "checks"), ("f_severity", "Severity", "severity"),
            ("f_annotator", "Annotator", "annotator"), ("f_model", "Model version", "model_version"),
            ("f_split", "Split", "split"),
        ):
            opts = data.options(queue_all, column)
            current = [v for v in st.session_state.get(key, []) if v in opts]
            if current != st.session_state.get(key, []):
                st.session_state[key] = current
            st.multiselect(label, opts, key=key, on_change=_reset_page, disabled=not opts,
                           placeholder="any" if opts else "no data yet")
        st.text_input("Item id contains", key="f_search", on_change=_reset_page)
        c1, c2 = st.columns([3, 2])
        c1.selectbox("Sort by", ("severity", "uncertainty", "item_id"), key="f_sort", on_change=_reset_page)
        c2.toggle("Desc.", key="f_desc", value=True, on_change=_reset_page)
        st.selectbox("Items per page", PAGE_SIZES, index=1, key="page_size", on_change=_reset_page)
        st.divider()
        st.markdown(
            "<div class='ml-muted'>Keys: <kbd>a</kbd> accept · <kbd>f</kbd> fix · <kbd>x</kbd> reject · "
            "<kbd>j</kbd>/<kbd>k</kbd> next/prev · <kbd>q</kbd> queue</div>", unsafe_allow_html=True)


# --------------------------------------------------------------------------- queue page


def _thumb(cache: render.ThumbnailCache, row: Any, files: data.ItemFiles) -> bytes | None:
    mask_path = files.main_mask()

    def make() -> np.ndarray:
        img = render.fit_box(_rgb(Path(row.image_path)), THUMB_W, THUMB_H, max_upscale=1.0)
        if mask_path is not None:
            import cv2

            m = cv2.resize(io.read_gray(mask_path), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
            img = render.overlay(img, m, opacity=0.4)
        return render.letterbox(img, THUMB_W, THUMB_H)

    try:
        return cache.get([Path(row.image_path), mask_path], f"thumb{THUMB_W}x{THUMB_H}", make)
    except (OSError, ValueError) as exc:
        log.warning("item %s: no thumbnail: %s", row.item_id, exc)
        return None


def queue_page(project: data.Project, queue: pd.DataFrame, queue_all: pd.DataFrame) -> None:
    st.title("Review queue")
    counts = data.decision_counts(queue_all)
    c = dict(zip(counts["status"], counts["items"], strict=True))
    m = st.columns(5)
    m[0].metric("In queue", len(queue_all))
    m[1].metric("Undecided", c["undecided"])
    m[2].metric("Accepted", c["accept"])
    m[3].metric("Rejected", c["reject"])
    m[4].metric("Fixed", c["fix"])
    if queue.empty:
        if queue_all.empty:
            st.info("Nothing to review: QA flagged no item yet. Turn on **Include unflagged items** to review any "
                    "item, or run `dvc repro` to produce the QA report.")
        else:
            st.info("No item matches these filters.")
        return
    size = int(st.session_state.get("page_size", 24))
    pages = data.n_pages(len(queue), size)
    page = min(max(1, int(st.session_state.get("page", 1))), pages)
    st.session_state["page"] = page
    nav = st.columns([1, 1, 3, 4])
    nav[0].button("◀ Prev", key="page_prev", disabled=page <= 1,
                  on_click=lambda: st.session_state.update(page=page - 1), width="stretch")
    nav[1].button("Next ▶", key="page_next", disabled=page >= pages,
                  on_click=lambda: st.session_state.update(page=page + 1), width="stretch")
    nav[2].markdown(f"Page **{page}** of **{pages}** · {len(queue)} items")
    rows = data.page_of(queue, page, size)
    cache = render.ThumbnailCache(project.thumbs)
    ncol = 4
    for start in range(0, len(rows), ncol):
        cols = st.columns(ncol)
        for col, row in zip(cols, rows.iloc[start : start + ncol].itertuples(index=False), strict=False):
            files = data.item_files(project, row.item_id, row.image_path)
            with col.container(border=True):
                thumb = _thumb(cache, row, files)
                if thumb is not None:
                    st.image(thumb, width="stretch")
                else:
                    st.caption("image unreadable")
                st.markdown(f"<div class='ml-card-title'>{html_text(row.item_id)}</div>", unsafe_allow_html=True)
                badges = []
                if row.severity:
                    badges.append(f":orange-badge[{md_text(row.severity)}]")
                badges += [f":violet-badge[{md_text(ch)}]" for ch in row.checks[:3]]
                if len(row.checks) > 3:
                    badges.append(f":gray-badge[+{len(row.checks) - 3}]")
                badges.append(f":{STATUS_COLOUR[row.decision]}-badge[{STATUS_LABEL[row.decision]}]")
                st.markdown(" ".join(badges))
                unc = "–" if np.isnan(row.uncertainty) else f"{row.uncertainty:.2f}"
                st.caption(f"uncertainty {unc} · {md_text(row.model_version or 'no model')}"
                           + (f" · {md_text(row.annotator)}" if row.annotator else ""))
                st.button("Open", key=f"open_{row.item_id}", on_click=_open_item, args=(row.item_id,),
                          width="stretch")


# --------------------------------------------------------------------------- item page


def _decide(project: data.Project, item_id: str, decision: str, digest: str, fix: str = "",
            next_id: str = "") -> None:
    ss = st.session_state
    # signed in: decisions are recorded under the signed-in reviewer, never a typed name
    reviewer = str(ss.get("signed_in") or ss.get("reviewer", "")).strip()
    reason = ""
    if decision == "reject":
        reason = str(ss.get("reject_reason", "")).strip() or str(ss.get("reject_preset", "")).strip()
    if not reviewer:
        ss["flash"] = "error:Enter your name under **Reviewer** in the sidebar before deciding."
        return
    if decision == "reject" and not reason:
        ss["flash"] = "error:A rejection needs a reason: pick one or type it, then reject."
        return
    try:
        d = _store(project).record(item_id, decision, reviewer=reviewer, reason=reason, fix=fix,
                                   mask_digest=digest)
    except (ValueError, StoreError) as exc:
        ss["flash"] = f"error:Decision NOT recorded: {md_text(exc)}"
        return
    what = {"accept": "accepted", "reject": f"rejected ({md_text(reason)})", "fix": f"fix {md_text(fix)} applied"}[
        decision]
    ss["flash"] = f"success:{md_text(item_id)} {what} · decision #{d.decision_id}"
    ss["reject_reason"] = ""
    ss["reject_preset"] = ""
    if next_id and ss.get("auto_advance", True):
        ss["item_id"] = next_id


def _flash() -> None:
    msg = st.session_state.get("flash", "")
    if msg:
        kind, _, text = msg.partition(":")
        (st.error if kind == "error" else st.success)(text)
        st.session_state["flash"] = ""


def _kv(pairs: list[tuple[str, str]]) -> None:
    """Label/value lines; both are escaped (values come from people and files)."""
    st.markdown("<div class='ml-kv'>" + "<br>".join(f"<b>{html_text(k)}</b> {html_text(v)}" for k, v in pairs)
                + "</div>", unsafe_allow_html=True)


def item_page(project: data.Project, queue: pd.DataFrame, queue_all: pd.DataFrame) -> None:
    ss = st.session_state
    item_id = ss.get("item_id", "")
    ids = list(queue["item_id"])
    if not item_id and ids:
        item_id = ss["item_id"] = ids[0]
    lookup = queue_all.set_index("item_id", drop=False)
    if item_id not in lookup.index:
        full = data.load_queue(project, include_all=True)
        lookup = full.set_index("item_id", drop=False)
    if not item_id or item_id not in lookup.index:
        st.title("Item")
        st.info("Open an item from the queue.")
        return
    row = lookup.loc[item_id]
    pos = ids.index(item_id) if item_id in ids else -1
    prev_id = ids[pos - 1] if pos > 0 else ""
    next_id = ids[pos + 1] if 0 <= pos < len(ids) - 1 else ""

    head = st.columns([6, 1, 1, 1], vertical_alignment="center")
    head[0].markdown(f"## Item {md_text(item_id)}")
    head[1].button("◀ Prev", key="item_prev", shortcut="k", disabled=not prev_id, on_click=_open_item,
                   args=(prev_id,), width="stretch")
    head[2].button("Next ▶", key="item_next", shortcut="j", disabled=not next_id, on_click=_open_item,
                   args=(next_id,), width="stretch")
    head[3].button("Queue", key="to_queue", shortcut="q", on_click=_go, args=("Queue",), width="stretch")
    where = f"{pos + 1} of {len(ids)} in the filtered queue" if pos >= 0 else "not in the filtered queue"
    st.caption(f"{where} · {row['width']}×{row['height']} px · {md_text(Path(row['image_path']).name)}")
    _flash()

    files = data.item_files(project, item_id, row["image_path"])
    try:
        image = _rgb(files.image)
    except (OSError, ValueError) as exc:
        st.error(f"Cannot read the image of {md_text(item_id)}: {md_text(exc)}")
        return
    shape = image.shape[:2]
    view = render.fit_box(image, VIEW_W, VIEW_H)
    vshape = view.shape[:2]

    def small(plane: np.ndarray | None) -> np.ndarray | None:
        if plane is None:
            return None
        import cv2

        return cv2.resize(plane, (vshape[1], vshape[0]), interpolation=cv2.INTER_NEAREST)

    main_mask = small(_plane(files.main_mask(), shape))
    pre = small(_plane(files.preannotation, shape))
    corr = small(_plane(files.correction, shape))
    left, right = st.columns([3, 2], gap="large")
    with left:
        tabs = st.tabs(["Overlay", "Pre-annotation vs correction", "Side by side", "Trimap · alpha · composite"])
        with tabs[0]:
            opacity = st.slider("Mask opacity", 0.0, 1.0, 0.45, 0.05, key="opacity")
            if main_mask is None:
                st.image(view, caption="no mask for this item yet")
            else:
                which = "correction" if files.correction else ("curated" if files.curated else "pre-annotation")
                if which == "curated" and files.preannotation:
                    which = "curated (pre-annotation after safe fixes)"
                st.image(render.overlay(view, main_mask, opacity=opacity), caption=f"{which} mask")
        with tabs[1]:
            if pre is None or corr is None:
                st.info("The difference view needs both a pre-annotation and a human correction "
                        f"({'pre-annotation' if pre is None else 'correction'} missing).")
            else:
                stats = render.diff_stats(pre, corr)
                st.image(render.diff_overlay(view, pre, corr))
                st.markdown(
                    "<div class='ml-legend ml-muted'>"
                    f"<span style='background:rgb{render.ADDED_COLOUR}'></span>added by the annotator"
                    f"<span style='background:rgb{render.REMOVED_COLOUR}'></span>removed"
                    f"<span style='background:rgb{render.KEPT_COLOUR}'></span>unchanged foreground</div>",
                    unsafe_allow_html=True)
                st.caption(f"IoU {stats.iou:.3f} · {stats.changed} display px changed "
                           f"({stats.added} added, {stats.removed} removed)")
        with tabs[2]:
            panels = [view] + [p for p in (corr, pre) if p is not None]
            names = ["image"] + [n for n, p in (("correction", corr), ("pre-annotation", pre)) if p is not None]
            st.image(render.side_by_side(panels), width="stretch", caption=" | ".join(names))
        with tabs[3]:
            trimap = small(_plane(files.trimap, shape))
            alpha = small(_plane(files.alpha, shape))
            mats = st.columns(3)
            if trimap is not None:
                mats[0].image(render.trimap_view(view, trimap), caption="trimap (amber = unknown)", width="stretch")
            else:
                mats[0].caption("no trimap yet")
            if alpha is not None:
                mats[1].image(render.to_rgb(alpha), caption="alpha matte", width="stretch")
                mats[2].image(render.cutout(view, alpha), caption="cut-out over checkerboard", width="stretch")
            else:
                mats[1].caption("no alpha matte yet")
            if files.composite is not None:
                try:
                    comp = render.fit_box(files.composite.read_image(), VIEW_W, VIEW_H // 2)
                    st.image(comp, caption=f"synthetic composite ({files.composite.name})")
                except (OSError, ValueError) as exc:
                    st.warning(f"composite {md_text(files.composite.name)}: cannot read ({md_text(exc)})")
    with right:
        st.markdown("#### QA findings")
        f = data.findings(project, item_id)
        if f.empty:
            st.caption("No QA findings recorded for this item.")
        else:
            st.dataframe(f, hide_index=True, width="stretch", height=min(36 * (len(f) + 1) + 3, 290),
                         column_config={"passed": st.column_config.CheckboxColumn("passed")})
        st.markdown("#### Item")
        cur = data.curated_row(project, item_id)
        unc = row["uncertainty"]
        _kv([
            ("checks", ", ".join(row["checks"]) or "–"),
            ("severity", row["severity"] or "–"),
            ("uncertainty", "–" if np.isnan(unc) else f"{unc:.3f}"),
            ("model version", row["model_version"] or "–"),
            ("annotator", row["annotator"] or "–"),
            ("split", row["split"] or "–"),
            ("source", str(cur.get("source", "")) or "–"),
            ("fixes applied", str(cur.get("fixes", "")) or "–"),
            ("status", STATUS_LABEL[row["decision"]] + (f" by {row['reviewer']}" if row["reviewer"] else "")),
        ])
        if row["reason"]:
            st.info(f"Queued because: {md_text(row['reason'])}")
        st.markdown("#### Decision")
        digest = data.file_digest(files.reviewed_mask)
        suggested = str(row["suggested_fix"] or "")
        known = data.available_fixes()
        choices = ([suggested] if suggested else []) + [k for k in known if k != suggested]
        fix = ""
        if choices:  # the suggested fix is preselected; otherwise the reviewer must pick one deliberately
            fix = st.selectbox("Fix to apply", choices, key=f"fix_choice_{item_id}", index=0 if suggested else None,
                               placeholder="no fix suggested: choose one to enable Apply fix",
                               format_func=lambda k: f"{k} (suggested)" if k == suggested else k) or ""
        unknown = bool(fix) and bool(known) and fix not in known
        if unknown:
            st.warning(f"QA suggests fix {md_text(repr(fix))}, which qa.fixes does not know; choose another or reject.")
        b = st.columns(2)
        b[0].button("Accept", key="accept", type="primary", shortcut="a", width="stretch", icon=":material/check:",
                    on_click=_decide, args=(project, item_id, "accept", digest, "", next_id))
        b[1].button("Apply fix" if fix else "No fix available", key="apply_fix", shortcut="f",
                    disabled=not fix or unknown, width="stretch", icon=":material/auto_fix_high:",
                    on_click=_decide, args=(project, item_id, "fix", digest, fix, next_id))
        st.selectbox("Reject reason", REJECT_REASONS, key="reject_preset",
                     format_func=lambda r: r or "choose a common reason…")
        st.text_input("…or describe the problem (sent to the annotator)", key="reject_reason",
                      placeholder="e.g. the left ear is cut off")
        st.button("Reject and send back", key="reject", shortcut="x", width="stretch", icon=":material/undo:",
                  on_click=_decide, args=(project, item_id, "reject", digest, "", next_id))
        st.toggle("Go to the next item after deciding", key="auto_advance", value=True)
        history = _store(project).history(item_id)
        if history:
            st.markdown("#### History")
            st.dataframe(
                pd.DataFrame([{"when": d.decided_at[:19].replace("T", " "), "who": d.reviewer,
                               "decision": d.decision, "reason / fix": d.reason or d.fix} for d in reversed(history)]),
                hide_index=True, width="stretch")


# --------------------------------------------------------------------------- overview page


def overview_page(project: data.Project, queue_all: pd.DataFrame) -> None:
    st.title("Overview")
    full = data.load_queue(project, include_all=True)
    m = st.columns(4)
    m[0].metric("Items", len(full))
    m[1].metric("Flagged by QA", int(full["flagged"].sum()))
    decided = full[full["decision"] != ""]
    m[2].metric("Decided", len(decided))
    m[3].metric("Rejected (back to annotation)", int((full["decision"] == "reject").sum()))

    c1, c2 = st.columns(2)
    with c1:
        st.markdown("#### QA findings per check")
        counts = data.check_counts(project)
        if counts.empty:
            st.caption("No QA report yet (`dvc repro` runs curate).")
        else:
            pivot = counts.pivot_table(index="check", columns="status", values="items", fill_value=0)
            st.bar_chart(pivot, color=["#ef4444", "#22c55e"] if list(pivot.columns) == ["failed", "passed"] else None)
    with c2:
        st.markdown("#### Review status")
        st.bar_chart(data.decision_counts(full).set_index("status"))
    st.markdown("#### Correction effort per model version")
    effort = data.correction_effort(project)
    if effort.empty:
        st.caption("No pre-annotations yet.")
    else:
        e1, e2 = st.columns([3, 2])
        e1.dataframe(effort, hide_index=True, width="stretch")
        by_model = effort.set_index("model_version")
        with e2:
            st.caption("items pre-annotated and corrected by humans, per model version")
            st.bar_chart(by_model[["items", "corrected"]], stack=False, height=220)
            lead = by_model["median_lead_time_s"].dropna()
            if not lead.empty:
                st.caption("median annotation lead time (s) — should fall from round to round")
                st.bar_chart(lead, height=220)
            noc = by_model["simulated_noc90"].dropna()
            if not noc.empty:
                st.caption("simulated clicks to IoU 0.90 from the pre-annotation (NoC@90, `maskloop evaluate`)")
                st.bar_chart(noc, height=220)
    st.markdown("#### Metrics between dataset versions")
    revs = data.revisions(project)
    labels = {r.rev: r.label for r in revs}
    keys = [r.rev for r in revs]
    r = st.columns(2)
    old = r[0].selectbox("Old", keys, index=min(1, len(keys) - 1), format_func=labels.get, key="rev_old")
    new = r[1].selectbox("New", keys, index=0, format_func=labels.get, key="rev_new")
    try:
        diff = data.metrics_diff(data.metrics_at(project, str(old)), data.metrics_at(project, str(new)))
    except Exception as exc:  # git problems must not take the page down
        st.warning(f"Cannot read metrics: {md_text(exc)}")
        return
    if diff.empty:
        st.caption(f"No metrics JSON under {md_text(project.paths.metrics)} at either revision.")
    else:
        st.dataframe(diff, hide_index=True, width="stretch",
                     column_config={"change": st.column_config.NumberColumn(format="%+.4g")})


# --------------------------------------------------------------------------- main


def _sign_out() -> None:
    st.session_state["signed_in"] = ""


def _sign_in_gate() -> None:
    """With a users file (``maskloop review`` sets ``MASKLOOP_REVIEW_USERS`` when reviewers exist), show nothing
    but the sign-in form until a valid token is given; the file is re-read on every run, so a removed reviewer is
    signed out at their next click."""
    path = os.environ.get(auth.ENV_USERS_FILE, "")
    if not path:
        return  # no sign-in configured: `maskloop review` allows that on loopback only
    ss = st.session_state
    try:
        users = auth.read_users(Path(path))
    except auth.UsersFileError as exc:
        st.error(md_text(exc))
        st.stop()
    if ss.get("signed_in") and ss["signed_in"] in users:
        return
    ss["signed_in"] = ""
    st.title("Sign in to maskloop review")
    with st.form("sign_in"):
        token = st.text_input("Reviewer token", type="password", key="sign_in_token",
                              help="Ask the project owner: `maskloop review-users add YOUR-NAME` prints it once.")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        name = auth.authenticate(users, token)
        if name is None:
            st.error("Unknown token.")
        else:
            ss["signed_in"] = name
            st.rerun()
    st.stop()


def main() -> None:
    st.set_page_config(page_title="maskloop review", page_icon=":material/rule:", layout="wide")
    st.markdown(CSS, unsafe_allow_html=True)
    _init_state()
    _sign_in_gate()
    try:
        project = _project()
        queue_all = data.load_queue(project, include_all=bool(st.session_state.get("f_all", False)))
    except Exception as exc:  # one clear sentence instead of a traceback page
        st.error(f"Cannot load the project: {md_text(exc)}")
        st.stop()
        return
    sidebar(queue_all)
    queue = data.filter_queue(queue_all, _filters_from_state())
    view = st.session_state.get("view", "Queue")
    if view == "Item":
        item_page(project, queue, queue_all)
    elif view == "Overview":
        overview_page(project, queue_all)
    else:
        queue_page(project, queue, queue_all)


main()
