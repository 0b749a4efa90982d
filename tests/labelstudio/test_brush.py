"""The brush-RLE codec against label_studio_sdk.converter.brush: byte-identical on random and real masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.converter import brush as sdk

from pipeline.annotation import brush
from pipeline.core import io


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    """Random masks: empty, full, noise, blobs with holes and many parts, odd sizes."""
    h = draw(st.integers(1, 70))
    w = draw(st.integers(1, 70))
    kind = draw(st.sampled_from(["empty", "full", "noise", "blobs", "values"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "empty":
        return np.zeros((h, w), np.uint8)
    if kind == "full":
        return np.full((h, w), 255, np.uint8)
    if kind == "noise":
        return np.where(rng.random((h, w)) < draw(st.floats(0.0, 1.0)), 255, 0).astype(np.uint8)
    if kind == "values":
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    m = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(draw(st.integers(1, 8))):  # parts, some with a hole
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, max(2, min(h, w)))
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        m[disk] = 255
        if r > 3:
            m[(yy - cy) ** 2 + (xx - cx) ** 2 <= (r // 2) ** 2] = 0
    return m


@settings(max_examples=150, deadline=None)
@given(masks())
def test_encode_is_byte_identical_to_the_sdk_and_decodes_back(mask: np.ndarray) -> None:
    ours = brush.mask_to_rle(mask)
    assert ours == sdk.mask2rle(mask)
    assert np.array_equal(brush.rle_to_alpha(ours, *mask.shape), mask)
    assert np.array_equal(brush.decode_rle(ours), sdk.decode_rle(ours))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(1, 70000)), min_size=1, max_size=6))
def test_flat_encode_matches_sdk_on_long_and_short_runs(runs: list[tuple[int, int]]) -> None:
    arr = np.concatenate([np.full(n, v, np.uint8) for v, n in runs])
    ours = brush.encode_rle(arr)
    assert ours == sdk.encode_rle(arr)
    assert np.array_equal(brush.decode_rle(ours), arr)


@pytest.mark.parametrize("n", [65536, 65537, 131072, 131073, 16, 17, 256, 257])
def test_run_length_boundaries(n: int) -> None:
    # runs at the class boundaries of the format (3/4/8/16-bit counts, 65536-value chunks)
    arr = np.zeros(n, np.uint8)
    assert brush.encode_rle(arr) == sdk.encode_rle(arr)
    arr[-1] = 255
    assert brush.encode_rle(arr) == sdk.encode_rle(arr)


def test_real_masks_with_holes_and_parts_round_trip(ecssd: Path) -> None:
    for name in ("0005", "0018", "0026", "0034"):
        mask = io.read_mask(ecssd / "masks" / f"{name}.png")
        rle = brush.mask_to_rle(mask)
        assert rle == sdk.mask2rle(mask), name
        decoded = sdk.decode_rle(rle).reshape(*mask.shape, 4)[:, :, 3]
        assert np.array_equal(brush.rle_to_alpha(rle, *mask.shape), decoded)
        assert np.array_equal(brush.rle_to_mask(rle, *mask.shape), mask)


def test_decoder_reads_literal_records_and_other_channels() -> None:
    # a stream with a literal record of 3 values (as the Label Studio editor writes) and a repeat record:
    # header num=4*2=8, word size 8, rle sizes 3/4/8/16; then "0 00 010" + 3 values, "1 00 100" + value 9
    bits = f"{8:032b}{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    bits += "0" + "00" + "010" + f"{1:08b}{2:08b}{3:08b}" + "1" + "00" + "100" + f"{9:08b}"
    bits += "0" * (-len(bits) % 8)
    data = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert brush.decode_rle(data).tolist() == [1, 2, 3, 9, 9, 9, 9, 9]
    assert brush.decode_rle(data).tolist() == sdk.decode_rle(data).tolist()
    assert brush.rle_to_alpha(data, 1, 2, channel=0).tolist() == [[1, 9]]
    assert brush.rle_to_alpha(data, 1, 2, channel=3).tolist() == [[9, 9]]
    assert brush.rle_header(data) == (8, 8)
    assert brush.decode_rle(bytes(data)).tolist() == [1, 2, 3, 9, 9, 9, 9, 9]


def test_rle_to_mask_thresholds_alpha() -> None:
    alpha = np.array([[0, 127, 128, 255]], np.uint8)
    rle = brush.mask_to_rle(alpha)
    assert brush.rle_to_mask(rle, 1, 4).tolist() == [[0, 0, 255, 255]]
    assert brush.rle_to_mask(rle, 1, 4, threshold=1).tolist() == [[0, 255, 255, 255]]


def test_errors_name_the_problem() -> None:
    rle = brush.mask_to_rle(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="expected 40"):
        brush.rle_to_alpha(rle, 2, 5)
    with pytest.raises(ValueError, match="truncated"):
        brush.decode_rle(brush.mask_to_rle(np.arange(12, dtype=np.uint8).reshape(3, 4))[:-3])
    with pytest.raises(ValueError, match="too short"):
        brush.decode_rle([1, 2, 3])
    with pytest.raises(ValueError, match="2-D"):
        brush.mask_to_rle(np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="empty"):
        brush.mask_to_rle(np.zeros((0, 3), np.uint8))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        brush.mask_to_rle(np.full((2, 2), 300))
    with pytest.raises(ValueError, match="byte values"):
        brush.decode_rle([0, 1, 999])
    with pytest.raises(ValueError, match="positive size"):
        brush.rle_to_alpha(rle, 0, 4)
    with pytest.raises(ValueError, match="channel"):
        brush.rle_to_alpha(rle, 3, 4, channel=4)
    with pytest.raises(ValueError, match="empty"):
        brush.encode_rle([])
    wide = f"{4:032b}{15:05b}" + "0" * 16 + "1" + "00" + "0" * 19
    with pytest.raises(ValueError, match="word size 16"):
        brush.decode_rle([int(wide[i : i + 8].ljust(8, "0"), 2) for i in range(0, len(wide), 8)])
