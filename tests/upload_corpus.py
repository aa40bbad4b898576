"""A deterministic corpus of hostile prompt uploads (no tests here), shared by
tests/test_upload_fuzz.py and bench/upload_fuzz.py.

`corpus(count, seed)` gives `count` hostile files — every crafted one (WAV, RF64, FLAC, OGG and
MP3 headers with absurd values, "zip bombs" of silence: small files that decode to far more
audio than a prompt may hold) and, for the rest, files drawn with a seeded `random.Random`:
random bytes, random bytes behind a format's magic, valid files cut at random offsets, valid
files with random bytes overwritten — followed by a few valid files that must be accepted.

Each case says what the server must answer: "refused" (400), "accepted" (201) or "either" (a
cut or mutated MP3, say, may still be decodable audio: 201 or 400, nothing else).
"""

from __future__ import annotations

import functools
import io
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from tests.test_api_helpers import encode, tone

REFUSED, ACCEPTED, EITHER = "refused", "accepted", "either"
CI_COUNT = 100


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    data: bytes
    expect: str


# --- valid sources -----------------------------------------------------------------------------


def can_write_mp3() -> bool:
    return "MP3" in sf.available_formats()


@functools.cache
def valid_sources() -> dict[str, bytes]:
    """Short valid files, one per format, to cut and mutate."""
    sources = {
        "wav": encode(tone(0.4, 16000, 2), 16000, "WAV", "PCM_16"),
        "flac": encode(tone(0.6, 44100, 2), 44100, "FLAC", "PCM_16"),
        "ogg": encode(tone(0.6, 22050, 1), 22050, "OGG", "VORBIS"),
    }
    if can_write_mp3():
        sources["mp3"] = encode(tone(0.6, 44100, 1), 44100, "MP3", "MPEG_LAYER_III")
    return sources


def valid_cases() -> list[Case]:
    """Files the server must accept (so a fuzz run cannot pass by refusing everything)."""
    cases = [
        ("wav", encode(tone(0.5, 8000, freq=300), 8000, "WAV", "PCM_16")),
        ("wav", encode(tone(0.7, 44100, 2, freq=500), 44100, "WAV", "FLOAT")),
        ("flac", encode(tone(0.5, 48000, 2, freq=700), 48000, "FLAC", "PCM_24")),
        ("ogg", encode(tone(0.8, 22050, 1, freq=900), 22050, "OGG", "VORBIS")),
    ]
    if can_write_mp3():
        cases.append(("mp3", encode(tone(0.6, 44100, 2, freq=350), 44100, "MP3", None)))
    return [
        Case("valid", f"valid-{i}.{ext}", data, ACCEPTED) for i, (ext, data) in enumerate(cases)
    ]


# --- crafted WAV / RF64 ------------------------------------------------------------------------


def _pcm(seconds: float = 0.2, rate: int = 8000) -> bytes:
    return (tone(seconds, rate)[:, 0] * 32767).astype("<i2").tobytes()


def wav_bytes(
    *,
    fmt_tag: int = 1,
    channels: int = 1,
    rate: int = 8000,
    byte_rate: int | None = None,
    block_align: int | None = None,
    bits: int = 16,
    fmt_size: int | None = None,
    data_size: int | None = None,
    riff_size: int | None = None,
    pcm: bytes | None = None,
) -> bytes:
    """A RIFF WAVE file with any header field set to any value."""
    pcm = _pcm() if pcm is None else pcm
    align = block_align if block_align is not None else max(channels * bits // 8, 0) & 0xFFFF
    fmt = struct.pack(
        "<HHIIHH",
        fmt_tag,
        channels & 0xFFFF,
        rate & 0xFFFFFFFF,
        (byte_rate if byte_rate is not None else rate * align) & 0xFFFFFFFF,
        align,
        bits & 0xFFFF,
    )
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt) if fmt_size is None else fmt_size)
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm) if data_size is None else data_size)
        + pcm
    )
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def rf64_bytes(*, ds64_data: int, ds64_riff: int | None = None, samples: int = 0) -> bytes:
    """An RF64 file whose ds64 chunk gives any sizes (the 32-bit fields say 0xFFFFFFFF)."""
    pcm = _pcm()
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    ds64 = struct.pack("<QQQI", ds64_riff or len(pcm) + 80, ds64_data, samples, 0)
    return (
        b"RF64\xff\xff\xff\xffWAVE"
        + b"ds64"
        + struct.pack("<I", len(ds64))
        + ds64
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data\xff\xff\xff\xff"
        + pcm
    )


Crafted = tuple[str, bytes] | tuple[str, bytes, str]  # label, data[, expectation]


def crafted_wav() -> list[Crafted]:
    return [
        ("wav-rate-0", wav_bytes(rate=0)),
        ("wav-rate-1", wav_bytes(rate=1)),
        ("wav-rate-2^32-1", wav_bytes(rate=0xFFFFFFFF)),
        ("wav-rate-2^31", wav_bytes(rate=0x80000000)),
        ("wav-channels-0", wav_bytes(channels=0)),
        ("wav-channels-65535", wav_bytes(channels=65535)),
        ("wav-channels-9", wav_bytes(channels=9, pcm=_pcm(0.09))),
        ("wav-bits-0", wav_bytes(bits=0)),
        ("wav-bits-1024", wav_bytes(bits=1024)),
        ("wav-bits-65535", wav_bytes(bits=65535)),
        # libsndfile works the block size out from channels and bits: decodable
        ("wav-block-align-0", wav_bytes(block_align=0), EITHER),
        ("wav-block-align-65535", wav_bytes(block_align=65535), EITHER),
        ("wav-format-tag-0", wav_bytes(fmt_tag=0)),
        ("wav-format-tag-ffff", wav_bytes(fmt_tag=0xFFFF)),
        ("wav-float-bits-16", wav_bytes(fmt_tag=3)),
        ("wav-data-size-ffffffff", wav_bytes(data_size=0xFFFFFFFF)),
        ("wav-data-size-0", wav_bytes(data_size=0)),
        ("wav-data-size-odd-over", wav_bytes(data_size=len(_pcm()) + 1)),
        ("wav-fmt-size-7fffffff", wav_bytes(fmt_size=0x7FFFFFFF)),
        ("wav-fmt-size-ffffffff", wav_bytes(fmt_size=0xFFFFFFFF)),
        ("wav-fmt-size-0", wav_bytes(fmt_size=0)),
        ("wav-fmt-size-2", wav_bytes(fmt_size=2)),
        ("wav-riff-size-0", wav_bytes(riff_size=0), EITHER),
        ("wav-no-data-chunk", wav_bytes()[:36] + b"LIST\x04\x00\x00\x00abcd"),
        ("wav-header-only", wav_bytes(pcm=b"", data_size=0)),
        (
            "wav-many-chunks",
            wav_bytes()[:12] + b"junk\x00\x00\x00\x00" * 4000 + wav_bytes()[12:],
        ),
        ("rf64-ds64-data-2^63", rf64_bytes(ds64_data=1 << 63)),
        ("rf64-ds64-data-2^64-1", rf64_bytes(ds64_data=(1 << 64) - 1)),
        ("rf64-ds64-data-0", rf64_bytes(ds64_data=0)),
        ("rf64-ds64-samples-2^62", rf64_bytes(ds64_data=1 << 40, samples=1 << 62)),
        ("rf64-ds64-truncated", b"RF64\xff\xff\xff\xffWAVEds64\x1c\x00\x00\x00\x01\x02"),
        ("rifx-rate-0", b"RIFX" + wav_bytes(rate=0)[4:]),
    ]


# --- crafted FLAC ------------------------------------------------------------------------------


def flac_streaminfo(
    data: bytes,
    *,
    rate: int | None = None,
    channels: int | None = None,
    bits: int | None = None,
    total: int | None = None,
) -> bytes:
    """`data` (a FLAC file) with STREAMINFO's rate (20 bits), channels (1-8), bits per sample
    (4-32) or total samples (36 bits; 0 means unknown) replaced."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0
    (packed,) = struct.unpack(">Q", data[18:26])
    old_rate = packed >> 44
    old_channels = ((packed >> 41) & 0x7) + 1
    old_bits = ((packed >> 36) & 0x1F) + 1
    old_total = packed & ((1 << 36) - 1)
    packed = (
        ((rate if rate is not None else old_rate) & 0xFFFFF) << 44
        | (((channels if channels is not None else old_channels) - 1) & 0x7) << 41
        | (((bits if bits is not None else old_bits) - 1) & 0x1F) << 36
        | ((total if total is not None else old_total) & ((1 << 36) - 1))
    )
    return data[:18] + struct.pack(">Q", packed) + data[26:]


@functools.cache
def flac_silence(seconds: float, rate: int, channels: int = 1) -> bytes:
    """Silence as FLAC, written in blocks (it compresses to almost nothing)."""
    buffer = io.BytesIO()
    block = np.zeros((rate * 10, channels), dtype=np.int16)
    with sf.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as out:
        left = int(seconds * rate)
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    return buffer.getvalue()


def crafted_flac() -> list[Crafted]:
    flac = valid_sources()["flac"]
    return [
        ("flac-rate-0", flac_streaminfo(flac, rate=0)),
        ("flac-rate-1", flac_streaminfo(flac, rate=1)),
        ("flac-rate-2^20-1", flac_streaminfo(flac, rate=(1 << 20) - 1)),
        ("flac-total-2^36-1", flac_streaminfo(flac, total=(1 << 36) - 1)),
        ("flac-total-2^32", flac_streaminfo(flac, total=1 << 32)),
        ("flac-channels-8-bits-32", flac_streaminfo(flac, channels=8, bits=32)),
        ("flac-bits-4", flac_streaminfo(flac, bits=4)),
        ("flac-streaminfo-cut", flac[:30]),
        ("flac-block-length-huge", flac[:5] + b"\xff\xff\xff" + flac[8:]),
        # zip bombs of silence: ~1 MB that decodes to 2 hours (the header is honest) ...
        ("bomb-flac-2h-48k", flac_silence(7200, 48000)),
        # ... or a few seconds whose header claims 2^36-1 frames at 96 kHz 8 channels
        (
            "bomb-flac-header",
            flac_streaminfo(flac_silence(3, 8000), rate=96000, total=(1 << 36) - 1),
        ),
        # ... or a header that understates the 20 minutes the stream holds
        ("bomb-flac-understated", flac_streaminfo(flac_silence(1200, 8000), total=8000)),
    ]


# --- crafted OGG -------------------------------------------------------------------------------


def _ogg_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ byte]
    return crc


def ogg_pages(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each page of an Ogg stream."""
    pages, at = [], 0
    while data.startswith(b"OggS", at) and at + 27 <= len(data):
        segments = data[at + 26]
        lacing = data[at + 27 : at + 27 + segments]
        end = at + 27 + segments + sum(lacing)
        pages.append((at, end))
        at = end
    return pages


def ogg_set_granule(data: bytes, page_index: int, granule: int) -> bytes:
    """`data` with one page's granule position replaced and its CRC recomputed."""
    start, end = ogg_pages(data)[page_index]
    page = bytearray(data[start:end])
    page[6:14] = struct.pack("<q", granule)
    page[22:26] = b"\x00\x00\x00\x00"
    page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
    return data[:start] + bytes(page) + data[end:]


@functools.cache
def ogg_silence(seconds: float, rate: int) -> bytes:
    buffer = io.BytesIO()
    block = np.zeros(rate * 10, dtype=np.float32)
    with sf.SoundFile(buffer, "w", rate, 1, format="OGG", subtype="VORBIS") as out:
        left = int(seconds * rate)
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    return buffer.getvalue()


def crafted_ogg() -> list[Crafted]:
    ogg = valid_sources()["ogg"]
    return [
        # libsndfile measures a Vorbis stream itself: a lying granule position is harmless
        ("ogg-last-granule-2^62", ogg_set_granule(ogg, -1, 1 << 62), EITHER),
        ("ogg-last-granule-2^63-1", ogg_set_granule(ogg, -1, (1 << 63) - 1), EITHER),
        ("ogg-last-granule-minus-2", ogg_set_granule(ogg, -1, -2), EITHER),
        ("ogg-headers-only", ogg[: ogg_pages(ogg)[2][1]] if len(ogg_pages(ogg)) > 3 else ogg[:200]),
        ("ogg-bad-crc", ogg[:22] + bytes(4) + ogg[26:]),
        ("bomb-ogg-12min", ogg_silence(720, 8000)),
    ]


# --- crafted MP3 -------------------------------------------------------------------------------


def mp3_xing_frames(data: bytes, frames: int) -> bytes | None:
    """`data` (an MP3 with a Xing/Info tag) with the tag's frame count replaced."""
    at = max(data.find(b"Xing", 0, 200), data.find(b"Info", 0, 200))
    if at < 0 or not data[at + 7] & 1:
        return None
    return data[: at + 8] + struct.pack(">I", frames & 0xFFFFFFFF) + data[at + 12 :]


def crafted_mp3() -> list[Crafted]:
    if not can_write_mp3():
        return []
    mp3 = valid_sources()["mp3"]
    cases: list[Crafted] = [
        ("mp3-id3-size-huge", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + mp3),
        ("mp3-id3-only", b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128)),
        ("mp3-sync-garbage", b"\xff\xfb\x90\x64" * 2000),
    ]
    for frames in (0xFFFFFFFF, 0x7FFFFFFF):
        lied = mp3_xing_frames(mp3, frames)
        if lied is not None:
            cases.append((f"mp3-xing-frames-{frames:x}", lied))
    return cases


# --- random draws ------------------------------------------------------------------------------

MAGICS = [
    b"RIFF\x24\x00\x00\x00WAVEfmt ",
    b"RIFF\xff\xff\xff\xffWAVE",
    b"RF64\xff\xff\xff\xffWAVEds64",
    b"fLaC\x00\x00\x00\x22",
    b"OggS\x00\x02",
    b"ID3\x03\x00\x00",
    b"\xff\xfb\x90\x64",
    b"FORM\x00\x00\x10\x00AIFFCOMM",
    b"caff\x00\x01\x00\x00",
    b".snd\x00\x00\x00\x18",
    b"riff.\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00",
    b"NIST_1A\n   1024\n",
]


def _random_bytes(rng: random.Random) -> tuple[bytes, str]:
    size = rng.choice([1, 3, 11, 44, 100, 1000, 4096, rng.randrange(1, 65536)])
    data = rng.randbytes(size)
    # a first byte of 0xFF could start an MPEG frame: that is a mutation's job, not this one's
    return (b"\x00" + data[1:] if data[0] == 0xFF else data), REFUSED


def _magic_then_random(rng: random.Random) -> tuple[bytes, str]:
    return rng.choice(MAGICS) + rng.randbytes(rng.randrange(0, 8192)), EITHER


def _truncated(ext: str) -> Callable[[random.Random], tuple[bytes, str]]:
    def draw(rng: random.Random) -> tuple[bytes, str]:
        data = valid_sources()[ext]
        cut = rng.choice([rng.randrange(1, 64), rng.randrange(1, len(data))])
        # a WAV cut anywhere misses part of its data chunk; a cut FLAC, OGG or MP3 may still be
        # a (shorter) valid stream
        return data[:cut], REFUSED if ext == "wav" else EITHER

    return draw


def _mutated(ext: str) -> Callable[[random.Random], tuple[bytes, str]]:
    def draw(rng: random.Random) -> tuple[bytes, str]:
        data = bytearray(valid_sources()[ext])
        head = min(len(data), 512)  # mostly the headers, sometimes anywhere
        for _ in range(rng.randrange(1, 9)):
            at = rng.randrange(head) if rng.random() < 0.7 else rng.randrange(len(data))
            data[at] = rng.randrange(256)
        return bytes(data), EITHER

    return draw


def draws() -> dict[str, Callable[[random.Random], tuple[bytes, str]]]:
    made: dict[str, Callable[[random.Random], tuple[bytes, str]]] = {
        "random": _random_bytes,
        "magic+random": _magic_then_random,
    }
    for ext in valid_sources():
        made[f"truncated-{ext}"] = _truncated(ext)
        made[f"mutated-{ext}"] = _mutated(ext)
    return made


def crafted() -> list[Case]:
    """Every crafted file; the kind is "bomb" or "crafted-<format>"."""
    cases: list[Case] = []
    for family, made in (
        ("wav", crafted_wav()),
        ("flac", crafted_flac()),
        ("ogg", crafted_ogg()),
        ("mp3", crafted_mp3()),
    ):
        for label, data, *expect in made:
            kind = "bomb" if label.startswith("bomb") else f"crafted-{family}"
            name = f"{len(cases):05d}-{label}.{family}"
            cases.append(Case(kind, name, data, expect[0] if expect else REFUSED))
    return cases


def corpus(count: int = CI_COUNT, seed: int = 20261127) -> list[Case]:
    """`count` hostile files (at least every crafted one), then the valid ones."""
    rng = random.Random(seed)
    cases = crafted()
    kinds = draws()
    names = sorted(kinds)
    while len(cases) < count:
        # half in turn, half at random: every kind is drawn even in a small sample
        kind = names[len(cases) % len(names)] if rng.random() < 0.5 else rng.choice(names)
        data, expect = kinds[kind](rng)
        cases.append(Case(kind, f"{len(cases):05d}-{kind}.bin", data, expect))
    return cases + valid_cases()
