"""orchard-pixels (decode + resize to 224x224) gives the same bytes as Pillow.

Expected values come from Pillow only:
    np.asarray(Image.open(f).convert('RGB').resize((224, 224)))
over a deterministic sample of the fruits-360 Test set plus made variants of a few of its images
(other sizes, grayscale, CMYK, palette, alpha, 16-bit, 1/2/4-bit, interlaced, progressive, EXIF
rotation, ...). Bad inputs must give ERROR lines that say what is wrong.

Run: ORCHARD_BUILD=build ORCHARD_SHARED=../shared \
         .venv/bin/python -m pytest tests/e2e/test_pixels_pillow.py
(ORCHARD_PIXELS=/path/to/orchard-pixels overrides where the binary is looked up.)
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIDE = 224
SAMPLE = 200


def _pixels_binary() -> Path:
    if os.environ.get("ORCHARD_PIXELS"):
        return Path(os.environ["ORCHARD_PIXELS"])
    build = Path(os.environ.get("ORCHARD_BUILD", "build"))
    for cand in (build / "tools" / "orchard-pixels", build / "orchard-pixels",
                 build / "bin" / "orchard-pixels"):
        if cand.exists():
            return cand
    pytest.fail(f"orchard-pixels not found under ORCHARD_BUILD={build}; build the project first")


def _test_dir() -> Path:
    shared = Path(os.environ.get("ORCHARD_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    d = shared / "data" / "fruits-360" / "Test"
    if not d.is_dir():
        pytest.fail(f"{d} not found; set ORCHARD_SHARED to the shared folder")
    return d


def run_pixels(paths: list[Path], out_dir: Path) -> dict[int, str]:
    """Runs orchard-pixels over paths (through stdin); returns {index: error line}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(_pixels_binary()), str(out_dir), "-"],
                          input="".join(f"{p}\n" for p in paths), capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, f"orchard-pixels failed: {proc.returncode} {proc.stderr}"
    errors = {}
    for line in proc.stdout.splitlines():
        assert line.startswith("ERROR "), f"unexpected output line: {line!r}"
        _, idx, msg = line.split(" ", 2)
        errors[int(idx)] = msg
    return errors


def pillow_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((SIDE, SIDE)))


def assert_identical(paths: list[Path], out_dir: Path) -> None:
    errors = run_pixels(paths, out_dir)
    mismatches = []
    for i, p in enumerate(paths):
        expected = pillow_pixels(p)
        assert i not in errors, f"{p.name}: Pillow decodes it but orchard-pixels says {errors[i]}"
        got = np.fromfile(out_dir / f"{i}.rgb", dtype=np.uint8)
        assert got.size == SIDE * SIDE * 3, f"{p.name}: {got.size} bytes written"
        got = got.reshape(SIDE, SIDE, 3)
        if not np.array_equal(got, expected):
            diff = np.abs(got.astype(int) - expected.astype(int))
            mismatches.append(f"{p.name}: {int((diff > 0).sum())} bytes differ, max {diff.max()}")
    assert not mismatches, "differs from Pillow:\n" + "\n".join(mismatches)


# --------------------------------------------------------------------------------------------
# A minimal PNG writer for what Pillow cannot save: 16-bit colour, 2/4-bit gray, Adam7 interlace.


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pack_rows(samples: np.ndarray, bit_depth: int) -> list[bytes]:
    """samples: (h, w, channels) integers -> packed scanlines (without filter bytes)."""
    h, w, c = samples.shape
    if bit_depth == 16:
        return [samples[y].astype(">u2").tobytes() for y in range(h)]
    if bit_depth == 8:
        return [samples[y].astype(np.uint8).tobytes() for y in range(h)]
    assert c == 1
    per_byte = 8 // bit_depth
    rows = []
    for y in range(h):
        vals = list(samples[y, :, 0]) + [0] * (-w % per_byte)
        out = bytearray()
        for i in range(0, len(vals), per_byte):
            b = 0
            for v in vals[i:i + per_byte]:
                b = (b << bit_depth) | int(v)
            out.append(b)
        rows.append(bytes(out))
    return rows


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def write_png(path: Path, samples: np.ndarray, bit_depth: int, color_type: int,
              interlace: bool = False, extra: bytes = b"") -> None:
    if samples.ndim == 2:
        samples = samples[:, :, None]
    h, w, _ = samples.shape
    raw = bytearray()
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            for row in _pack_rows(sub, bit_depth):
                raw += b"\0" + row
    else:
        for row in _pack_rows(samples, bit_depth):
            raw += b"\0" + row
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra +
                     _chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + _chunk(b"IEND", b""))


# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_test_images() -> list[Path]:
    files = sorted(_test_dir().rglob("*.jpg"))
    assert len(files) > SAMPLE
    return files


@pytest.fixture(scope="module")
def sources(all_test_images) -> list[Image.Image]:
    """Three real photos from different classes, as RGB, for the made variants."""
    n = len(all_test_images)
    return [Image.open(all_test_images[i]).convert("RGB") for i in (n // 7, n // 2, n - 5)]


def test_sample_of_test_set_is_identical(all_test_images, tmp_path):
    n = len(all_test_images)
    sample = [all_test_images[(i * n) // SAMPLE] for i in range(SAMPLE)]
    assert len({p.parent.name for p in sample}) > 100  # spread over the classes
    assert_identical(sample, tmp_path / "out")


def test_jpeg_sizes_are_identical(sources, tmp_path):
    made = []
    for k, src in enumerate(sources):
        for w, h in [(37, 53), (224, 224), (300, 200), (640, 480), (1000, 750), (225, 223),
                     (224, 100), (100, 224), (1, 1), (3, 500)]:
            p = tmp_path / f"s{k}_{w}x{h}.jpg"
            src.resize((w, h)).save(p, quality=90)
            made.append(p)
    p = tmp_path / "big_4000x3000.jpg"
    sources[0].resize((4000, 3000)).save(p, quality=85)
    made.append(p)
    assert_identical(made, tmp_path / "out")


def test_jpeg_variants_are_identical(sources, tmp_path):
    made = []
    for k, src in enumerate(sources):
        big = src.resize((301, 207))

        def save(name, im, **kw):
            p = tmp_path / f"v{k}_{name}.jpg"
            im.save(p, **kw)
            made.append(p)

        save("gray", big.convert("L"), quality=90)
        save("cmyk", big.convert("CMYK"), quality=90)  # convert('CMYK') leaves K at 0
        c, m, y, _ = big.convert("CMYK").split()
        k_band = big.convert("L").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        save("cmyk_k", Image.merge("CMYK", (c, m, y, k_band)), quality=95)
        save("progressive", big, quality=90, progressive=True)
        save("gray_progressive", big.convert("L"), progressive=True)
        save("444", big, subsampling=0)
        save("422", big, subsampling=1)
        save("420", big, subsampling=2)
        save("q100", big, quality=100)
        save("q10", big, quality=10)
        save("optimized", big, optimize=True)
        save("restart", big, restart_marker_blocks=3)
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 CW; ignored by Pillow without exif_transpose
        save("exif6", big, exif=exif.tobytes())
        save("icc", big, icc_profile=b"\0" * 300)
    # Junk after the EOI marker: Pillow ignores it.
    data = (tmp_path / "v0_444.jpg").read_bytes()
    (tmp_path / "trailing.jpg").write_bytes(data + b"garbage after the end" * 10)
    made.append(tmp_path / "trailing.jpg")
    with Image.open(made[0]) as im:
        assert im.mode == "L"
    with Image.open(made[1]) as im:
        assert im.mode == "CMYK"
    assert_identical(made, tmp_path / "out")


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
def test_png_variants_are_identical(sources, tmp_path):
    made = []
    rng = np.random.default_rng(7)
    for k, src in enumerate(sources):
        big = src.resize((257, 181))
        arr = np.asarray(big)

        def save(name, im, **kw):
            p = tmp_path / f"p{k}_{name}.png"
            im.save(p, **kw)
            made.append(p)

        alpha = Image.fromarray(rng.integers(0, 256, (181, 257), dtype=np.uint8))
        rgba = big.copy()
        rgba.putalpha(alpha)
        la = big.convert("L")
        la.putalpha(alpha)
        save("rgb", big)
        save("rgba", rgba)
        save("la", la)
        save("l", big.convert("L"))
        save("p", big.convert("P", palette=Image.Palette.ADAPTIVE, colors=200))
        save("p_trns", big.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
             transparency=3)
        save("p_rgba", rgba.convert("P"))  # palette with an alpha per entry
        save("p_small", big.convert("P", palette=Image.Palette.ADAPTIVE, colors=4), bits=2)
        save("one_bit", big.convert("1"))
        save("i16", Image.fromarray((arr[:, :, 1].astype(np.uint16) * 3)))  # values > 255

        def raw(name, samples, depth, ctype, interlace=False, extra=b""):
            p = tmp_path / f"p{k}_{name}.png"
            write_png(p, samples, depth, ctype, interlace, extra)
            made.append(p)

        a16 = arr.astype(np.uint16) * 257 + rng.integers(0, 256, arr.shape)
        gray = arr[:, :, 0]
        alpha16 = rng.integers(0, 65536, gray.shape)
        raw("rgb16", a16, 16, 2)
        raw("rgba16", np.dstack([a16, alpha16]), 16, 6)
        raw("gray16_full", gray.astype(np.uint16) * 257, 16, 0)  # mostly > 255: clipped
        raw("gray16_small", gray.astype(np.uint16), 16, 0)  # all <= 255
        raw("la16", np.dstack([gray.astype(np.uint16) * 250, alpha16]), 16, 4)
        raw("gray4", gray // 16, 4, 0)
        raw("gray2", gray // 64, 2, 0)
        raw("gray1", gray // 128, 1, 0)
        raw("gray1_interlaced", gray // 128, 1, 0, interlace=True)
        raw("rgb_interlaced", arr, 8, 2, interlace=True)
        raw("rgba16_interlaced", np.dstack([a16, alpha16]), 16, 6, interlace=True)
        raw("gray_trns", gray, 8, 0, extra=_chunk(b"tRNS", struct.pack(">H", 10)))
        pal = bytes(rng.integers(0, 256, 16 * 3, dtype=np.uint8))
        raw("p4_interlaced", gray // 16, 4, 3, interlace=True, extra=_chunk(b"PLTE", pal))
        # indices 8..15 point past a palette of 8 entries: Pillow shows them black
        raw("p4_short_palette", gray // 16, 4, 3, extra=_chunk(b"PLTE", pal[:24]))
    raw("tiny_interlaced", np.asarray(sources[0].resize((3, 2))), 8, 2, interlace=True)
    with Image.open(tmp_path / "p0_i16.png") as im:
        assert im.mode == "I;16" and np.asarray(im).max() > 255
    assert_identical(made, tmp_path / "out")


def test_damaged_png_like_pillow(sources, tmp_path):
    """Damage Pillow tolerates decodes identically; damage it refuses gives an ERROR line."""
    arr = np.asarray(sources[1].resize((40, 30)))
    raw = b"".join(b"\0" + arr[y].tobytes() for y in range(arr.shape[0]))
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 30, 8, 2, 0, 0, 0))
    good = sig + ihdr + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    bad_idat_crc = bytearray(good)
    bad_idat_crc[-13] ^= 0xFF  # last byte of the IDAT checksum: Pillow never checks it
    tolerated = {
        "no_iend.png": good[:-12],
        "bad_idat_crc.png": bytes(bad_idat_crc),
        "extra_data.png": (sig + ihdr + _chunk(b"IDAT", zlib.compress(raw + raw))
                           + _chunk(b"IEND", b"")),
        "split_idat.png": sig + ihdr + b"".join(
            _chunk(b"IDAT", z[i:i + 97])
            for z in [zlib.compress(raw)] for i in range(0, len(z), 97)) + _chunk(b"IEND", b""),
    }
    refused = {
        # Pillow checks every chunk's checksum before the image data.
        "bad_text_crc.png": (sig + ihdr + b"\0\0\0\4tEXtabcd\0\0\0\0"
                             + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""),
                             "checksum"),
        "stream_ends_mid_row.png": (sig + ihdr + _chunk(b"IDAT", zlib.compress(raw[:5 * 121 + 50]))
                                    + _chunk(b"IEND", b""), "corrupt PNG"),
        "idat_cut.png": (sig + ihdr + _chunk(b"IDAT", zlib.compress(raw)[:-40])
                         + _chunk(b"IEND", b""), "corrupt PNG"),
    }
    ok_paths = []
    for name, data in tolerated.items():
        (tmp_path / name).write_bytes(data)
        ok_paths.append(tmp_path / name)
    assert_identical(ok_paths, tmp_path / "ok")
    bad_paths = []
    for name, (data, _) in refused.items():
        (tmp_path / name).write_bytes(data)
        bad_paths.append(tmp_path / name)
        with pytest.raises(Exception):
            pillow_pixels(tmp_path / name)
    errors = run_pixels(bad_paths, tmp_path / "bad")
    for i, (name, (_, expected)) in enumerate(refused.items()):
        assert i in errors and expected in errors[i], f"{name}: {errors.get(i)!r}"


def _patched_sof(data: bytes, width: int, height: int) -> bytes:
    """Returns data with the frame header (SOF0/1/2) claiming width x height."""
    i = 2
    while i < len(data):
        assert data[i] == 0xFF
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return data[:i + 5] + struct.pack(">HH", height, width) + data[i + 9:]
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_bad_inputs_give_errors(all_test_images, tmp_path):
    real = all_test_images[0].read_bytes()
    cases = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (real[: len(real) // 2], "truncated"),
        "text.jpg": (b"this is not an image, just some text\n" * 5, "not a JPEG or PNG"),
        "huge.jpg": (_patched_sof(real, 60000, 60000), "60000x60000"),
        "gif.jpg": (b"GIF89a" + b"\0" * 100, "not a JPEG or PNG"),
        "header_only.jpg": (real[:300], "truncated"),
        # Only the final EOI marker missing: Pillow's suspending decoder calls this truncated too.
        "no_eoi.jpg": (real[:-2], "truncated"),
        "garbage_body.jpg": (real[:200] + bytes(range(256)) * 20, ""),
    }
    png = io.BytesIO()
    Image.open(all_test_images[0]).save(png, "PNG")
    cases["truncated.png"] = (png.getvalue()[: len(png.getvalue()) // 2], "truncated")
    paths = []
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    for p in paths:  # Pillow refuses every one of them too
        with pytest.raises(Exception):
            pillow_pixels(p)
    errors = run_pixels(paths, tmp_path / "out")
    for i, (name, (_, expected)) in enumerate(cases.items()):
        assert i in errors, f"{name}: no ERROR line"
        assert not (tmp_path / "out" / f"{i}.rgb").exists()
        msg = errors[i]
        assert str(paths[i]) in msg, f"{name}: message does not name the file: {msg}"
        assert expected.lower() in msg.lower(), f"{name}: {msg!r} lacks {expected!r}"
    assert "limit" in errors[3] and "178956970" in errors[3]


def test_huge_header_fails_fast(all_test_images, tmp_path):
    """A 60000x60000 header must be refused before any pixel buffer is allocated."""
    p = tmp_path / "huge.jpg"
    p.write_bytes(_patched_sof(all_test_images[0].read_bytes(), 60000, 60000))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(p)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(["bash", "-c", f"ulimit -v 2000000; exec '{_pixels_binary()}' '{out}' "
                           f"'{p}'"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERROR 0 ") and "60000x60000" in proc.stdout


def test_paths_from_arguments_and_stdin_mix(all_test_images, tmp_path):
    a, b, c = all_test_images[:3]
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([str(_pixels_binary()), str(out), str(a), "-", str(c)],
                          input=f"{b}\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == ""
    for i, p in enumerate((a, b, c)):
        got = np.fromfile(out / f"{i}.rgb", dtype=np.uint8).reshape(SIDE, SIDE, 3)
        assert np.array_equal(got, pillow_pixels(p))
