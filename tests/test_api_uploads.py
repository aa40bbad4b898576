"""Prompt uploads through PortSIP's blob API on a real store: formats converted once to 8 kHz
mono PCM16, digests checked, hostile and broken files refused with a clear 400 and nothing left
behind (no row, no temporary file), files in use protected, downloads by digest."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from engine.uploads import UploadLimits, Uploads, wav_problem
from tests.test_api_helpers import Api, encode, files_on_disk, make_api, tone, wav_float_stereo


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = make_api(tmp_path)
    yield made
    made.close()


def error(response: Any) -> dict[str, Any]:
    body = response.json()
    return dict(body["errors"][0])


def assert_nothing_stored(api: Api) -> None:
    assert api.get("/api/files").json() == {"count": 0, "items": []}
    assert files_on_disk(api.data_dir) == []
    assert api.store.upload_ids() == []


def downloaded_info(api: Api, file_id: str) -> tuple[Any, bytes]:
    info = api.get(f"/api/files/{file_id}").json()
    response = api.get(info["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert "attachment" in response.headers["content-disposition"]
    return sf.info(io.BytesIO(response.content)), response.content


@pytest.mark.parametrize(
    ("name", "data", "seconds"),
    [
        ("hello.wav", wav_float_stereo(1.5), 1.5),
        ("pcm24.wav", encode(tone(1.0, 96000, 1), 96000, "WAV", "PCM_24"), 1.0),
        ("hello.flac", encode(tone(1.0, 48000, 2), 48000, "FLAC", "PCM_16"), 1.0),
        ("hello.ogg", encode(tone(1.0, 44100, 1), 44100, "OGG", "VORBIS"), 1.0),
        ("hello.mp3", encode(tone(1.0, 44100, 2), 44100, "MP3", "MPEG_LAYER_III"), 1.0),
    ],
)
def test_audio_formats_are_converted_once_for_playback(
    api: Api, name: str, data: bytes, seconds: float
) -> None:
    response = api.upload(data, name, chunk=7000)
    assert response.status_code == 201, response.text
    file_id = response.json()["id"]
    assert set(response.json()) == {"id"}
    info, content = downloaded_info(api, file_id)
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert info.duration == pytest.approx(seconds, abs=0.15)
    listed = api.get("/api/files").json()
    assert listed["count"] == 1
    item = listed["items"][0]
    assert item["id"] == file_id and item["name"] == name and item["size"] == len(content)
    assert item["media_type"] == "audio/vnd.wave" and item["created_at"].endswith("Z")
    assert item["digest"] == "sha256:" + hashlib.sha256(content).hexdigest()
    assert api.runtime.files[file_id].read_bytes() == content
    # only the blob is left: no part file, no temporary conversion, no session
    assert [p.parent.name for p in files_on_disk(api.data_dir)] == ["blobs"]
    assert api.store.upload_ids() == []


def test_upload_headers_range_status_and_a_last_chunk_in_complete(api: Api) -> None:
    data = wav_float_stereo(0.5)
    started = api.post("/api/blobs/uploads", params={"filename": "../../etc/passwd.wav"})
    assert started.status_code == 202 and started.content == b""
    upload_id = started.headers["PortSIP-Upload-ID"]
    token = started.headers["PortSIP-Upload-Token"]
    assert started.headers["Location"] == f"/api/blobs/uploads/{upload_id}"
    assert started.headers["Range"] == "0-0"
    appended = api.patch(
        f"/api/blobs/uploads/{upload_id}/append",
        content=data[:1000],
        headers={"PortSIP-Upload-Token": token, "Content-Range": "0-999"},
    )
    assert appended.status_code == 203 and appended.headers["Range"] == "0-999"
    status = api.get(f"/api/blobs/uploads/{upload_id}/status")
    assert status.status_code == 204 and status.headers["Range"] == "0-999"
    assert status.headers["PortSIP-Upload-ID"] == upload_id
    # a chunk that does not continue the upload
    gap = api.post(
        f"/api/blobs/uploads/{upload_id}/append",
        content=b"xx",
        headers={"PortSIP-Upload-Token": token, "Content-Range": "5000-5001"},
    )
    assert gap.status_code == 416 and gap.headers["Range"] == "0-999"
    assert error(gap)["code"] == "RANGE_NOT_SATISFIABLE"
    digest = hashlib.sha256(data).hexdigest()  # plain hex is accepted too
    completed = api.post(
        f"/api/blobs/uploads/{upload_id}/complete",
        params={"digest": digest},
        content=data[1000:],
        headers={"PortSIP-Upload-Token": token},
    )
    assert completed.status_code == 201, completed.text
    file_id = completed.json()["id"]
    assert api.get(f"/api/files/{file_id}").json()["name"] == "passwd.wav"
    assert api.get(f"/api/blobs/uploads/{upload_id}/status").status_code == 404


def test_the_upload_token_is_required(api: Api) -> None:
    started = api.post("/api/blobs/uploads")
    upload_id = started.headers["PortSIP-Upload-ID"]
    for headers in ({}, {"PortSIP-Upload-Token": "wrong"}):
        response = api.post(
            f"/api/blobs/uploads/{upload_id}/append", content=b"abc", headers=headers
        )
        assert response.status_code == 403 and error(response)["code"] == "FORBIDDEN"
        response = api.post(
            f"/api/blobs/uploads/{upload_id}/complete",
            params={"digest": "0" * 64},
            headers=headers,
        )
        assert response.status_code == 403
    assert api.get(f"/api/blobs/uploads/{upload_id}/status").headers["Range"] == "0-0"


def test_destroying_an_upload(api: Api) -> None:
    started = api.post("/api/blobs/uploads")
    upload_id = started.headers["PortSIP-Upload-ID"]
    api.post(
        f"/api/blobs/uploads/{upload_id}/append",
        content=b"x" * 100,
        headers={"PortSIP-Upload-Token": started.headers["PortSIP-Upload-Token"]},
    )
    assert api.post(f"/api/blobs/uploads/{upload_id}/destroy").status_code == 204
    assert api.post(f"/api/blobs/uploads/{upload_id}/destroy").status_code == 404
    assert api.get("/api/blobs/uploads/not-a-uuid/status").status_code == 404
    assert_nothing_stored(api)


def truncated_wav() -> bytes:
    data = encode(tone(1.0, 16000), 16000, "WAV", "PCM_16")
    return data[: len(data) // 2]


def wav_claiming_4_gb() -> bytes:
    pcm = (tone(0.5, 8000)[:, 0] * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFF0)
        + pcm
    )


def flac_with_huge_rate() -> bytes:
    # 655 kHz x 8 channels: tiny as FLAC silence, gigabytes once decoded
    return encode(np.zeros((655_000, 8), dtype=np.float32), 655_000, "FLAC", "PCM_16")


@pytest.mark.parametrize(
    ("data", "digest", "field", "message"),
    [
        (wav_float_stereo(0.3), "sha256:" + "0" * 64, "digest", "not sha256:0000"),
        (b"this is not audio at all " * 100, None, "file", "not an audio file"),
        (b"\x00" * 5000, None, "file", "not an audio file"),
        (truncated_wav(), None, "file", "truncated"),
        (wav_claiming_4_gb(), None, "file", "announces 4294967280 bytes"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt \xff\xff\xff\x7f", None, "file", "truncated"),
        (encode(np.zeros((800, 1), np.float32), 8000, "WAV", "PCM_16"), None, "file", "silent"),
        (encode(tone(0.5, 8000, 12), 8000, "WAV", "PCM_16"), None, "file", "12 channels"),
        (flac_with_huge_rate(), None, "file", "sample rate 655000 Hz"),
    ],
    ids=[
        "wrong-digest",
        "text",
        "zeros",
        "truncated-wav",
        "wav-claiming-4GB",
        "riff-fmt-overrun",
        "silence",
        "12-channels",
        "flac-655kHz",
    ],
)
def test_bad_uploads_are_400_and_leave_nothing(
    api: Api, data: bytes, digest: str | None, field: str, message: str
) -> None:
    response = api.upload(data, "bad.wav", digest=digest)
    assert response.status_code == 400, response.text
    problem = error(response)
    assert problem["code"] == "VALIDATE_FAILED"
    assert message in problem["detail"][field], problem
    assert str(api.data_dir) not in response.text  # no server paths in messages
    assert_nothing_stored(api)


def test_a_malformed_digest_keeps_the_upload_for_a_retry(api: Api) -> None:
    data = wav_float_stereo(0.3)
    started = api.post("/api/blobs/uploads")
    upload_id, token = started.headers["PortSIP-Upload-ID"], started.headers["PortSIP-Upload-Token"]
    headers = {"PortSIP-Upload-Token": token}
    api.post(f"/api/blobs/uploads/{upload_id}/append", content=data, headers=headers)
    for digest in ("md5:abc", "sha256:xyz", "sha1:" + "0" * 64):
        response = api.post(
            f"/api/blobs/uploads/{upload_id}/complete", params={"digest": digest}, headers=headers
        )
        assert response.status_code == 400 and "digest" in error(response)["detail"]
    good = api.post(
        f"/api/blobs/uploads/{upload_id}/complete",
        params={"digest": "SHA256:" + hashlib.sha256(data).hexdigest().upper()},
        headers=headers,
    )
    assert good.status_code == 201, good.text


def test_complete_without_a_digest_takes_the_data_as_uploaded(api: Api) -> None:
    """PortSIP's document makes `digest` optional (issue 13, item 5): the server computes it."""
    data = wav_float_stereo(0.4)
    for params in ({}, {"digest": ""}):
        started = api.post("/api/blobs/uploads")
        upload_id = started.headers["PortSIP-Upload-ID"]
        headers = {"PortSIP-Upload-Token": started.headers["PortSIP-Upload-Token"]}
        api.post(f"/api/blobs/uploads/{upload_id}/append", content=data, headers=headers)
        done = api.post(f"/api/blobs/uploads/{upload_id}/complete", params=params, headers=headers)
        assert done.status_code == 201, done.text
        assert api.get(f"/api/files/{done.json()['id']}").status_code == 200


def test_an_empty_upload_is_refused(api: Api) -> None:
    response = api.upload(b"", digest="sha256:" + hashlib.sha256(b"").hexdigest())
    assert response.status_code == 400 and "empty" in error(response)["detail"]["file"]
    assert_nothing_stored(api)


def test_size_and_duration_limits(tmp_path: Path) -> None:
    api = make_api(tmp_path, limits=UploadLimits(max_bytes=50_000, max_seconds=2.0))
    try:
        too_big = api.upload(wav_float_stereo(1.0), chunk=30_000)
        assert too_big.status_code == 413, too_big.text
        assert error(too_big)["code"] == "PAYLOAD_TOO_LARGE"
        assert_nothing_stored(api)
        # a Content-Length over the limit is refused before the body is read
        started = api.post("/api/blobs/uploads")
        too_big = api.post(
            f"/api/blobs/uploads/{started.headers['PortSIP-Upload-ID']}/append",
            content=b"x" * 60_000,
            headers={"PortSIP-Upload-Token": started.headers["PortSIP-Upload-Token"]},
        )
        assert too_big.status_code == 413
        assert_nothing_stored(api)
        too_long = api.upload(encode(tone(3.0, 8000), 8000, "WAV", "PCM_16"))
        assert too_long.status_code == 400
        assert "3 s long; prompts may be at most 2 s" in error(too_long)["detail"]["file"]
        assert_nothing_stored(api)
    finally:
        api.close()


def test_too_many_open_uploads(tmp_path: Path) -> None:
    api = make_api(tmp_path, limits=UploadLimits(max_sessions=2))
    try:
        assert api.post("/api/blobs/uploads").status_code == 202
        assert api.post("/api/blobs/uploads").status_code == 202
        third = api.post("/api/blobs/uploads")
        assert third.status_code == 409 and "in progress" in error(third)["message"]
        assert len(api.store.upload_ids()) == 2
    finally:
        api.close()


def test_the_open_uploads_limit_counts_per_api_token(tmp_path: Path) -> None:
    """Issue 13, item 4: a token's abandoned uploads do not block another token — after the
    API token is changed (a new `api-token`, `VR_API_TOKEN` or `server.api_token` and a
    restart), the old token's idle sessions do not count against the new one."""
    old = make_api(tmp_path, limits=UploadLimits(max_sessions=2), token="old-token-0123456789")
    try:
        for _ in range(2):
            assert old.post("/api/blobs/uploads").status_code == 202
        refused = old.post("/api/blobs/uploads")
        assert refused.status_code == 409 and "of this API token" in error(refused)["message"]
    finally:
        old.close()
    new = make_api(tmp_path, limits=UploadLimits(max_sessions=2), token="new-token-9876543210")
    try:
        for _ in range(2):
            assert new.post("/api/blobs/uploads").status_code == 202
        assert new.post("/api/blobs/uploads").status_code == 409
        assert len(new.store.upload_ids()) == 4  # the old ones idle on, until they expire
        owners = {new.store.get_upload(i).owner for i in new.store.upload_ids()}  # type: ignore[union-attr]
        assert len(owners) == 2 and all(len(o) == 16 and "token" not in o for o in owners)
    finally:
        new.close()


def test_abandoned_uploads_free_their_slots_after_an_hour_idle(tmp_path: Path) -> None:
    """Issue 13, item 4: 32 uploads started and never completed refused every new upload for
    24 h, across restarts. Now a session idle for an hour is discarded, and a refusal says
    when the first slot frees."""
    now = [time.time()]
    api = make_api(tmp_path, limits=UploadLimits(max_sessions=2))
    api.client.app.state.context.uploads.clock = lambda: now[0]  # type: ignore[attr-defined]
    try:
        assert UploadLimits().session_ttl == 3600
        for _ in range(2):
            assert api.post("/api/blobs/uploads").status_code == 202
        now[0] += 600
        refused = api.post("/api/blobs/uploads")
        assert refused.status_code == 409
        assert re.search(r"the first idle one expires in 300[01] s", error(refused)["message"])
        now[0] += 3001
        assert api.post("/api/blobs/uploads").status_code == 202  # both expired meanwhile
        assert len(api.store.upload_ids()) == 1
    finally:
        api.close()


def test_the_same_audio_twice_is_one_file(api: Api) -> None:
    data = wav_float_stereo(0.5)
    first = api.upload(data, "a.wav").json()["id"]
    second = api.upload(data, "b.wav").json()["id"]
    assert first == second
    assert api.get("/api/files").json()["count"] == 1
    assert len(files_on_disk(api.data_dir)) == 1


def test_a_file_in_use_cannot_be_destroyed(api: Api) -> None:
    file_id = api.upload(wav_float_stereo(0.5)).json()["id"]
    other = api.upload(encode(tone(0.5, 8000, freq=300), 8000, "WAV", "PCM_16")).json()["id"]
    rid = api.create_ivr(prompt_file_id=file_id, transfer_prompt_file_id=other)
    view = api.get(f"/api/ivrs/{rid}").json()
    blob = api.get(f"/api/files/{file_id}").json()
    assert view["prompt_file_name"] == "prompt.wav" and view["prompt_file_size"] == blob["size"]
    assert view["prompt_file_url"] == blob["url"] and blob["url"].startswith("/api/blobs/")
    assert view["transfer_prompt_file_url"] == api.get(f"/api/files/{other}").json()["url"]
    assert api.runtime.receptionists["800"].prompt_file_id == file_id

    in_use = api.post(f"/api/files/{file_id}/destroy")
    assert in_use.status_code == 409 and error(in_use)["code"] == "CONFLICT"
    assert "800" in error(in_use)["message"]
    api.post(f"/api/ivrs/{rid}", json={"prompt_file_id": None})
    assert api.post(f"/api/files/{file_id}/destroy").status_code == 204
    assert api.get(blob["url"]).status_code == 404
    assert api.get(f"/api/files/{file_id}").status_code == 404
    assert file_id not in api.runtime.files
    assert len(files_on_disk(api.data_dir)) == 1


def test_downloads_by_digest(api: Api) -> None:
    file_id = api.upload(wav_float_stereo(0.5), "Grüße.mp3").json()["id"]
    blob = api.get(f"/api/files/{file_id}").json()
    hex_digest = blob["digest"].removeprefix("sha256:")
    for url in (f"/api/blobs/{hex_digest}", f"/api/blobs/sha256:{hex_digest}"):
        response = api.get(url)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == hex_digest
    assert "Gr%C3%BC%C3%9Fe.wav" in api.get(blob["url"]).headers["content-disposition"]
    assert api.get("/api/blobs/" + "a" * 64).status_code == 404
    assert api.get("/api/blobs/not-a-digest").status_code == 400


def test_files_list_options(api: Api) -> None:
    for n, name in enumerate(["alpha.wav", "beta.wav", "gamma.wav"]):
        data = encode(tone(0.5 + n * 0.5, 8000, freq=300 + n * 100), 8000, "WAV", "PCM_16")
        assert api.upload(data, name).status_code == 201
    names = lambda **p: [i["name"] for i in api.get("/api/files", params=p).json()["items"]]  # noqa: E731
    assert names(orderby="name desc") == ["gamma.wav", "beta.wav", "alpha.wav"]
    assert names(filter="duration gt 0.75") == ["beta.wav", "gamma.wav"]
    assert names(filter="startswith(name,'a') or endswith(name,'a.wav')") == [
        "alpha.wav",
        "beta.wav",
        "gamma.wav",
    ]
    assert names(search="ET") == ["beta.wav"]
    assert names(skip=1, top=1) == ["beta.wav"]
    assert api.get("/api/files", params={"filter": "path eq 'x'"}).status_code == 400


def test_leftovers_of_a_crash_are_cleaned_at_start(api: Api) -> None:
    file_id = api.upload(wav_float_stereo(0.5)).json()["id"]
    started = api.post("/api/blobs/uploads")
    live = started.headers["PortSIP-Upload-ID"]
    (api.store.blob_dir / ("f" * 64 + ".wav")).write_bytes(b"moved in, never recorded")
    (api.store.upload_dir / "0a9c.wav").write_bytes(b"half a conversion")
    (api.store.upload_dir / "tmpabc.wav.part").write_bytes(b"half a conversion")
    Uploads(api.store)
    kept = {p.name for p in files_on_disk(api.data_dir)}
    assert kept == {f"{live}.part", api.store.get_file(file_id).path.name}  # type: ignore[union-attr]


def test_stale_uploads_expire(tmp_path: Path) -> None:
    api = make_api(tmp_path, limits=UploadLimits(session_ttl=-1))
    try:
        first = api.post("/api/blobs/uploads").headers["PortSIP-Upload-ID"]
        api.post("/api/blobs/uploads")
        assert api.get(f"/api/blobs/uploads/{first}/status").status_code == 404
        assert len(api.store.upload_ids()) == 1
    finally:
        api.close()


def test_wav_problem_accepts_good_and_odd_but_valid_files(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, tone(0.1, 8000), 8000, "PCM_16", format="WAV")
    assert wav_problem(good) is None
    flac = tmp_path / "x.flac"
    flac.write_bytes(encode(tone(0.1, 8000), 8000, "FLAC", "PCM_16"))
    assert wav_problem(flac) is None
    trailing = tmp_path / "trailing.wav"
    trailing.write_bytes(good.read_bytes() + b"LIST\x04\x00\x00\x00abcd")
    assert wav_problem(trailing) is None


def test_conversion_runs_off_the_event_loop(tmp_path: Path, monkeypatch: Any) -> None:
    import threading

    from engine.convert import Converter

    entered, release = threading.Event(), threading.Event()
    threads: list[str] = []
    real = Converter.convert

    def held(self: Converter, source: Path, target: Path, name: str) -> float:
        threads.append(threading.current_thread().name)
        entered.set()
        assert release.wait(10)
        return real(self, source, target, name)

    monkeypatch.setattr(Converter, "convert", held)
    api = make_api(tmp_path)
    result: dict[str, Any] = {}
    try:
        with api.client:  # one event loop serves every request
            worker = threading.Thread(
                target=lambda: result.update(response=api.upload(wav_float_stereo(0.5)))
            )
            worker.start()
            assert entered.wait(10)
            # while the upload converts, the loop and the store keep serving
            assert api.get("/healthz").status_code == 200
            assert api.get("/api/files").json()["count"] == 0
            assert (
                api.post("/api/ivrs", json={"name": "M", "extension_number": "800"}).status_code
                == 201
            )
            release.set()
            worker.join(10)
    finally:
        release.set()
        api.close()
    assert result["response"].status_code == 201
    assert threads == ["vr-convert_0"]
