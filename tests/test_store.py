"""The model cache end to end: registry -> local HTTP server -> verify -> convert -> cache -> load."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import pytest
import torch

from helpers.cli import child_env, run_cli
from helpers.httpserver import (
    QUOTA_PAGE,
    FaultyServer,
    Route,
    block_internet,
    clean_environment,
    model_record,
    published_model,
)
from helpers.registries import add_model, serve_drive_locally
from helpers.tfwriter import write_checkpoint, write_sid_checkpoint
from helpers.tmpfs import tmpfs
from seedark.downloads import fetch
from seedark.errors import DownloadError, UsageError, WeightsError
from seedark.models import cache as store
from seedark.models import official, registry
from seedark.models import weights as weights_module
from seedark.models.cache import (
    download_model,
    import_model,
    list_models,
    load_model,
    manual_instructions,
    remove_model,
)
from seedark.models.network import NetworkSpec
from seedark.models.registry import DATA_NAME, INDEX_NAME, MODELS, ModelRecord
from seedark.models.tfcheckpoint import expected_data_size, read_checkpoint, read_index
from seedark.models.weights import LoadedWeights, save_safetensors

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "tests" / "data"
OFFICIAL = {"sony": DATA_DIR / "official-sony-model.ckpt.index", "fuji": DATA_DIR / "official-fuji-model.ckpt.index"}
SONY_DATA_SIZE = 87_552_664


@dataclass
class Checkpoint:
    dir: Path
    index: bytes
    data: bytes
    weights: LoadedWeights


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_environment(monkeypatch, tmp_path / "home")
    block_internet(monkeypatch)
    monkeypatch.setattr(fetch, "RETRY_BASE_DELAY", 0.001)
    monkeypatch.setattr(fetch, "RETRY_MAX_DELAY", 0.01)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    d = tmp_path_factory.mktemp("fixture-ckpt")
    weights = write_sid_checkpoint(d / "model.ckpt", NetworkSpec(width=4), seed=7)
    return Checkpoint(d, (d / INDEX_NAME).read_bytes(), (d / DATA_NAME).read_bytes(), weights)


@pytest.fixture(scope="module")
def zeros(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data file of the official sony size that matches nothing (sparse, so cheap)."""
    path = tmp_path_factory.mktemp("zeros") / DATA_NAME
    with open(path, "wb") as f:
        f.truncate(SONY_DATA_SIZE)
    return path


def record_for(
    server: FaultyServer, ckpt: Checkpoint, name: str = "fixture", data_path: str | None = None
) -> ModelRecord:
    """A registry entry pinning the fixture's own facts, its sources on the local server."""
    return model_record(server, name, ckpt.index, ckpt.data, data_path=data_path)


@pytest.fixture
def fixture_model(server: FaultyServer, ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch) -> ModelRecord:
    return published_model(monkeypatch, server, "fixture", ckpt.index, ckpt.data)


def index_route(server: FaultyServer) -> Route:
    return server.routes[f"/fixture/{INDEX_NAME}"]


def data_route(server: FaultyServer) -> Route:
    return server.routes[f"/fixture/{DATA_NAME}"]


def cached_files(home: Path) -> list[str]:
    """Everything in the cache but lock files."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and p.suffix != ".lock")


def same_weights(a: LoadedWeights, b: LoadedWeights) -> bool:
    return (
        a.spec == b.spec and set(a.state) == set(b.state) and all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    )


# --------------------------------------------------------------------------- registry and paths


@pytest.mark.parametrize("name", ["sony", "fuji"])
def test_official_registry_pins_match_the_official_indexes(name: str) -> None:
    record = MODELS[name]
    index, data = record.files
    raw = OFFICIAL[name].read_bytes()
    assert index.name == INDEX_NAME and hashlib.sha256(raw).hexdigest() == index.sha256 and len(raw) == index.size
    _, entries = read_index(OFFICIAL[name])
    assert data.name == DATA_NAME and data.size == expected_data_size(entries)
    assert data.gdrive_id and any(data.gdrive_id in u for u in data.urls)
    assert index.urls == (
        f"https://raw.githubusercontent.com/cchen156/Learning-to-See-in-the-Dark/master/checkpoint/"
        f"{name.capitalize()}/model.ckpt.index",
    )
    assert record.packing == {"sony": "bayer", "fuji": "xtrans"}[name] and record.licence == "MIT"
    assert registry.DEFAULT_MODEL == "sony"


def test_get_record_and_the_registry_is_read_only() -> None:
    assert registry.get_record("sony") is MODELS["sony"]
    with pytest.raises(UsageError, match="known models: fuji, sony"):
        registry.get_record("canon")
    with pytest.raises(TypeError):
        MODELS["canon"] = MODELS["sony"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        MODELS["sony"].name = "canon"  # type: ignore[misc]
    assert isinstance(MODELS["sony"].files, tuple) and isinstance(MODELS["sony"].files[0].urls, tuple)


def test_cache_dir_follows_seedark_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert store.cache_dir() == tmp_path / "home"
    assert store.model_files("sony").weights == tmp_path / "home" / "models" / "sony" / "model.safetensors"
    assert store.model_files("sony").lock == tmp_path / "home" / "models" / "sony.lock"
    monkeypatch.delenv("SEEDARK_HOME")
    assert store.cache_dir() == Path(platformdirs.user_cache_dir("seedark"))


def test_mirror_replaces_every_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDARK_MIRROR", "https://mirror.example/sid/")
    index, data = official.sources(MODELS["sony"])
    assert index.urls == ("https://mirror.example/sid/sony/model.ckpt.index",)
    assert data.urls == ("https://mirror.example/sid/sony/model.ckpt.data-00000-of-00001",)
    assert data.gdrive_id is None and index.sha256 == MODELS["sony"].files[0].sha256


def test_manual_instructions_name_every_file_and_the_import_command(monkeypatch: pytest.MonkeyPatch) -> None:
    text = manual_instructions("sony")
    assert "https://raw.githubusercontent.com/cchen156/Learning-to-See-in-the-Dark/master/checkpoint/Sony/" in text
    assert "https://drive.google.com/uc?export=download&id=1wmx7AM6XWHjHIvpErmIouQgbQoMxAymG" in text
    assert "https://drive.google.com/file/d/1wmx7AM6XWHjHIvpErmIouQgbQoMxAymG/view" in text
    assert "model.ckpt.data-00000-of-00001 (87,552,664 bytes)" in text
    assert "seedark models import sony <folder>" in text
    monkeypatch.setenv("SEEDARK_MIRROR", "http://mirror.example")
    text = manual_instructions("sony")
    assert text.index("http://mirror.example/sony/model.ckpt.index") < text.index("raw.githubusercontent.com")


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "x.lock", "-x"])
def test_model_names_are_checked(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid model name"):
        store.model_files(bad)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="known models: fuji, sony"):
        load_model("canon")


# --------------------------------------------------------------------------- the download path


def test_download_verify_convert_cache_and_load(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    path = download_model("fixture", progress=lambda d, t: seen.append((d, t)))
    files = store.model_files("fixture")
    assert path == files.weights
    assert cached_files(tmp_path / "home") == ["models/fixture/model.safetensors", "models/fixture/provenance.json"]
    total = len(ckpt.index) + len(ckpt.data)
    assert seen[-1] == (total, total)
    prov = json.loads(files.provenance.read_text())
    assert prov["source"] == "download" and prov["verified"] is True
    assert prov["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["weights_size"] == path.stat().st_size
    assert [f["name"] for f in prov["files"]] == [INDEX_NAME, DATA_NAME]
    assert prov["files"][0]["urls"] == [server.url(f"/fixture/{INDEX_NAME}")]
    assert prov["files"][0]["pinned_sha256"] == prov["files"][0]["sha256"] == fixture_model.files[0].sha256
    assert prov["files"][1]["sha256"] == hashlib.sha256(ckpt.data).hexdigest()
    assert prov["spec"] == {"in_channels": 4, "width": 4, "block": 2, "packing": "bayer"}
    assert same_weights(load_model("fixture"), ckpt.weights)
    # cached: neither a second download nor a load goes to the network
    download_model("fixture")
    load_model("fixture")
    assert len(index_route(server).hits) == 1 and len(data_route(server).hits) == 1


def test_first_load_downloads_once_and_says_so(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="seedark"):
        weights = load_model("fixture")
    assert same_weights(weights, ckpt.weights)
    text = caplog.text
    assert "not in the cache yet: downloading it once" in text and str(store.model_files("fixture").dir) in text
    assert "127.0.0.1" in text


def test_cached_model_works_offline(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    download_model("fixture")
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    server.stop()  # and the server is gone too
    assert same_weights(load_model("fixture"), ckpt.weights)
    assert download_model("fixture") == store.model_files("fixture").weights


def test_offline_and_not_cached_names_the_files_to_fetch(
    server: FaultyServer, fixture_model: ModelRecord, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        load_model("fixture")
    reason = info.value.reason
    assert "offline" in reason and "seedark models import fixture <folder>" in reason
    assert server.url(f"/fixture/{DATA_NAME}") in reason and server.url(f"/fixture/{INDEX_NAME}") in reason
    assert index_route(server).hits == [] and data_route(server).hits == []
    assert cached_files(tmp_path / "home") == []
    with pytest.raises(WeightsError, match="not in the cache"):
        load_model("fixture", download=False)


def test_drive_confirmation_flow_end_to_end(
    server: FaultyServer, ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add(f"/drive/{INDEX_NAME}", ckpt.index)
    _, payload = server.add_drive("FIXTUREID", ckpt.data)
    add_model(monkeypatch, record_for(server, ckpt, "drive", data_path="/uc?export=download&id=FIXTUREID"))
    serve_drive_locally(monkeypatch)
    assert same_weights(load_model("drive"), ckpt.weights)
    assert payload.full_downloads() == 1


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"fail_status": 404, "fail_times": -1}, "HTTP 404"),
        ({"fail_status": 403, "fail_times": -1}, "HTTP 403"),
        ({"fail_status": 429, "fail_times": -1, "retry_after": "1"}, "HTTP 429"),
        ({"fail_status": 503, "fail_times": -1}, "HTTP 503"),
        ({"html": QUOTA_PAGE}, "web page instead of the file"),
        ({"ranges": False, "drop_after": 300_000, "drop_times": -1}, "connection lost"),
    ],
)
def test_failed_downloads_explain_and_cache_nothing(
    server: FaultyServer, fixture_model: ModelRecord, tmp_path: Path, fault: dict[str, object], words: str
) -> None:
    for key, value in fault.items():
        setattr(data_route(server), key, value)
    with pytest.raises(DownloadError) as info:
        load_model("fixture")
    reason = info.value.reason
    assert words in reason
    assert server.url(f"/fixture/{DATA_NAME}") in reason and "seedark models import fixture <folder>" in reason
    leftovers = cached_files(tmp_path / "home")
    if words == "connection lost":  # only a resumable partial may stay, out of the way
        assert leftovers == [f"models/fixture/download/{DATA_NAME}.part", f"models/fixture/download/{INDEX_NAME}"]
    else:
        assert leftovers == []
    assert not store.list_models()[-1].cached


def test_server_down_is_reported(fixture_model: ModelRecord, server: FaultyServer, tmp_path: Path) -> None:
    server.stop()
    with pytest.raises(DownloadError) as info:
        download_model("fixture")
    port = server.httpd.server_port
    first = f"cannot download model 'fixture' ({INDEX_NAME}): connection refused by 127.0.0.1:{port}"
    assert info.value.reason.startswith(first) and "seedark models import fixture" in info.value.reason
    assert cached_files(tmp_path / "home") == []


def test_interrupted_download_resumes_on_the_next_run(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint
) -> None:
    route = data_route(server)
    route.ranges, route.drop_after, route.drop_times = False, 300_000, -1
    with pytest.raises(DownloadError):
        download_model("fixture")
    route.ranges, route.drop_times = True, 0
    route.hits.clear()
    assert same_weights(load_model("fixture"), ckpt.weights)
    assert len(route.hits) == 1 and route.hits[0].status == 206 and (route.hits[0].range or "").startswith("bytes=")
    assert len(index_route(server).hits) == 1  # the verified index was kept for the retry
    assert not store.model_files("fixture").downloads.exists()


def test_wrong_data_fails_crc_and_caches_nothing(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, tmp_path: Path
) -> None:
    bad = bytearray(ckpt.data)
    bad[-10] ^= 0x40  # in the last tensor, an Adam slot: the whole file is verified, not just what we load
    data_route(server).wrong_bytes = bytes(bad)
    with pytest.raises(DownloadError) as info:
        download_model("fixture")
    assert "CRC32C" in info.value.reason
    assert cached_files(tmp_path / "home") == []


def test_official_index_with_mismatching_data_from_a_mirror_is_refused(
    server: FaultyServer, zeros: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.add("/mirror/sony/model.ckpt.index", OFFICIAL["sony"].read_bytes())
    data = server.add(f"/mirror/sony/{DATA_NAME}", zeros, chunk_size=1 << 20)
    monkeypatch.setenv("SEEDARK_MIRROR", server.url("/mirror"))
    with caplog.at_level(logging.INFO, logger="seedark"), pytest.raises(DownloadError) as info:
        load_model()  # the default model, on first use
    reason = info.value.reason
    assert "fails its CRC32C check" in reason
    assert server.url(f"/mirror/sony/{DATA_NAME}") in reason and "seedark models import sony <folder>" in reason
    assert "downloading it once" in caplog.text
    assert data.full_downloads() == 1
    assert cached_files(tmp_path / "home") == []  # no model, no index, no .part
    assert not (tmp_path / "home" / "models" / "sony").exists()


def test_conversion_disk_full_leaves_nothing(
    server: FaultyServer, fixture_model: ModelRecord, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(weights_module, "save_safetensors", full)
    with pytest.raises(DownloadError) as info:
        download_model("fixture")
    assert "disk full" in info.value.reason
    assert cached_files(tmp_path / "home") == []


def test_unusable_cache_folder_is_reported(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "blocker").write_text("")
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "blocker" / "seedark"))
    with pytest.raises(DownloadError, match="SEEDARK_HOME"):
        download_model("fixture")
    with pytest.raises(WeightsError, match="SEEDARK_HOME"):
        import_model("mine", ckpt.dir, unverified=True)


# --------------------------------------------------------------------------- a real full disk

DISK_FULL = "disk full: no space left to write the model (free some space, or set SEEDARK_HOME to another disk)"


def everything(home: Path) -> list[str]:
    """Every file and folder under ``home``: what a failed run left behind."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def test_import_on_a_full_disk_is_one_line_and_leaves_nothing(
    ckpt: Checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    with tmpfs(home, 256 << 10):  # the converted width-4 model takes 0.5 MB
        code, _, err = run_cli(capsys, "models", "import", "mine", ckpt.dir, "--unverified")
        assert code == 1
        assert err == f"seedark: error: {home / 'models' / 'mine'}: {DISK_FULL}\n"
        assert everything(home) == ["models", "models/mine.lock"]  # the lock file is kept, as always


@pytest.mark.parametrize("fits", ["the download, not the conversion", "not even the download"])
def test_download_on_a_full_disk_is_one_line_and_leaves_nothing(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, tmp_path: Path, fits: str
) -> None:
    home = tmp_path / "home"
    room = len(ckpt.index) + (len(ckpt.data) if fits.startswith("the download") else 0) + (128 << 10)
    with tmpfs(home, room):
        with pytest.raises(DownloadError) as info:
            download_model("fixture")
        assert info.value.reason == DISK_FULL  # no manual steps: fetching by hand would not help
        if fits.startswith("the download"):
            assert data_route(server).full_downloads() == 1
        assert everything(home) == ["models", "models/fixture.lock"]


def test_the_openvino_cache_on_a_full_disk_is_skipped(ckpt: Checkpoint, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from seedark.runtime.backends import OpenVINOBackend

    home = tmp_path / "home"
    with tmpfs(home, 64 << 10):
        backend = OpenVINOBackend(ckpt.weights, persist=True)
        backend.compiled(16, 16)  # converted and compiled all the same, just not kept
        assert all((home / p).is_dir() for p in everything(home))  # no file, no partial conversion


# --------------------------------------------------------------------------- a server that trickles


def test_a_trickling_download_is_given_up_and_resumed_later(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # at most 100 bytes/s (a byte, then 10 ms), against 10,000 bytes/s over 0.3 s windows
    route = data_route(server)
    route.chunk_size, route.chunk_delay = 1, 0.01
    monkeypatch.setattr(fetch, "RATE_WINDOW", 0.3)
    monkeypatch.setenv("SEEDARK_MIN_DOWNLOAD_RATE", "10000")
    with pytest.raises(DownloadError) as info:
        download_model("fixture")
    assert "too slow:" in info.value.reason and "seedark models import fixture <folder>" in info.value.reason
    part = store.model_files("fixture").downloads / f"{DATA_NAME}.part"
    kept = part.stat().st_size
    assert 0 < kept < len(ckpt.data)
    route.chunk_size, route.chunk_delay = 64 * 1024, 0.0
    assert same_weights(load_model("fixture"), ckpt.weights)
    assert route.hits[-1].range == f"bytes={kept}-"


# --------------------------------------------------------------------------- corrupted cache entries


def corrupt(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def test_corrupt_cache_entry_is_fetched_again(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint
) -> None:
    download_model("fixture")
    corrupt(store.model_files("fixture").weights)
    assert same_weights(load_model("fixture"), ckpt.weights)
    assert data_route(server).full_downloads() == 2


@pytest.mark.parametrize("how", ["no-download", "offline"])
def test_corrupt_cache_entry_is_reported_when_it_cannot_be_fetched(
    server: FaultyServer, fixture_model: ModelRecord, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    download_model("fixture")
    corrupt(store.model_files("fixture").weights)
    if how == "offline":
        monkeypatch.setenv("SEEDARK_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        load_model("fixture", download=how != "no-download")
    assert "corrupt" in info.value.reason and "sha256" in info.value.reason
    assert "seedark models remove fixture" in info.value.reason
    assert data_route(server).full_downloads() == 1


def test_tampered_provenance_or_stale_pins_are_noticed(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint
) -> None:
    download_model("fixture")
    prov_path = store.model_files("fixture").provenance
    prov = json.loads(prov_path.read_text())
    prov["files"][0]["pinned_sha256"] = "0" * 64  # made from another index than the registry now pins
    prov_path.write_text(json.dumps(prov))
    with pytest.raises(WeightsError, match="other files than this version of seedark pins"):
        load_model("fixture", download=False)
    prov_path.write_text("{not json")
    with pytest.raises(WeightsError, match="unreadable"):
        load_model("fixture", download=False)
    assert same_weights(load_model("fixture"), ckpt.weights)  # repaired by downloading again
    assert data_route(server).full_downloads() == 2


# --------------------------------------------------------------------------- import


def copy_checkpoint(src: Path, dest: Path, *, data: Path | bytes | None = None, index: bytes | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / INDEX_NAME).write_bytes(index if index is not None else (src / INDEX_NAME).read_bytes())
    target = dest / DATA_NAME
    if isinstance(data, Path):
        os.symlink(data, target)
    else:
        target.write_bytes(data if data is not None else (src / DATA_NAME).read_bytes())
    return dest


def test_import_of_an_official_checkpoint_is_verified_against_the_pins(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, tmp_path: Path
) -> None:
    path = import_model("fixture", copy_checkpoint(ckpt.dir, tmp_path / "by-hand"))
    prov = store.read_provenance("fixture")
    assert prov is not None and prov["source"] == "import" and prov["verified"] is True
    assert prov["original_path"] == str((tmp_path / "by-hand").resolve())
    assert path == store.model_files("fixture").weights
    assert same_weights(load_model("fixture"), ckpt.weights)
    assert data_route(server).hits == []


def test_import_of_a_tampered_official_checkpoint_is_refused(zeros: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(
        OFFICIAL["sony"].parent, tmp_path / "sony", data=zeros, index=OFFICIAL["sony"].read_bytes()
    )
    with pytest.raises(WeightsError) as info:
        import_model("sony", folder)
    assert "CRC32C" in info.value.reason and info.value.path == folder / DATA_NAME
    bad_index = bytearray(OFFICIAL["sony"].read_bytes())
    bad_index[100] ^= 0x01
    (folder / INDEX_NAME).write_bytes(bytes(bad_index))
    with pytest.raises(WeightsError) as info:
        import_model("sony", folder)
    assert "not the official sony checkpoint index" in info.value.reason and info.value.path == folder / INDEX_NAME
    assert cached_files(tmp_path / "home") == []


def test_import_of_a_fixture_checkpoint_with_a_bad_data_file_is_refused(
    server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint, tmp_path: Path
) -> None:
    bad = bytearray(ckpt.data)
    bad[-3] ^= 0x01
    with pytest.raises(WeightsError, match="CRC32C"):
        import_model("fixture", copy_checkpoint(ckpt.dir, tmp_path / "bad", data=bytes(bad)))
    with pytest.raises(WeightsError, match="bytes, the index expects"):
        import_model("fixture", copy_checkpoint(ckpt.dir, tmp_path / "short", data=ckpt.data[:-1]))
    assert cached_files(tmp_path / "home") == []


def test_import_unverified_tf_checkpoint_then_load(ckpt: Checkpoint, tmp_path: Path) -> None:
    import_model("mine", ckpt.dir, unverified=True)
    prov = store.read_provenance("mine")
    assert prov is not None
    assert (prov["source"], prov["verified"], prov["original_path"]) == ("import", False, str(ckpt.dir.resolve()))
    assert same_weights(load_model("mine"), ckpt.weights)


def test_import_unverified_safetensors_then_load(ckpt: Checkpoint, tmp_path: Path) -> None:
    save_safetensors(ckpt.weights, tmp_path / "trained.safetensors")
    import_model("trained", tmp_path / "trained.safetensors", unverified=True)
    assert same_weights(load_model("trained"), ckpt.weights)


def test_import_unverified_tf_made_fixture(tmp_path: Path) -> None:
    src = DATA_DIR / "tf_sony_w4"
    if not (src / INDEX_NAME).is_file():
        pytest.skip("TF-made fixture not present")
    import_model("tfmade", src, unverified=True)
    assert load_model("tfmade").spec == NetworkSpec(in_channels=4, width=4, block=2)


def test_import_refusals(ckpt: Checkpoint, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="official model"):
        import_model("sony", ckpt.dir, unverified=True)
    with pytest.raises(UsageError, match="unverified"):
        import_model("mine", ckpt.dir)
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError):
        import_model("junk", tmp_path / "junk.bin", unverified=True)
    with pytest.raises(WeightsError, match="no such file or folder") as info:  # what was given, not ".index"
        import_model("sony", tmp_path / "nothing-here")
    assert info.value.path == tmp_path / "nothing-here"
    assert cached_files(tmp_path / "home") == []


def test_corrupt_imported_model_is_reported(ckpt: Checkpoint) -> None:
    import_model("mine", ckpt.dir, unverified=True)
    corrupt(store.model_files("mine").weights)
    with pytest.raises(WeightsError) as info:
        load_model("mine")
    assert "corrupt" in info.value.reason and "seedark models remove mine" in info.value.reason
    assert "import it again" in info.value.reason


# --------------------------------------------------------------------------- list and remove


def test_list_and_remove(server: FaultyServer, fixture_model: ModelRecord, ckpt: Checkpoint) -> None:
    rows = {r.name: r for r in list_models()}
    assert list(rows)[:2] == ["sony", "fuji"]
    assert not rows["sony"].cached and rows["sony"].download_size == 4602 + SONY_DATA_SIZE and rows["sony"].path is None
    download_model("fixture")
    import_model("mine", ckpt.dir, unverified=True)
    rows = {r.name: r for r in list_models()}
    fixture, mine = rows["fixture"], rows["mine"]
    assert fixture.cached and not fixture.imported and fixture.verified
    assert fixture.path == store.model_files("fixture").weights and fixture.size == fixture.path.stat().st_size
    assert mine.cached and mine.imported and mine.verified is False and "imported from" in mine.description
    assert remove_model("mine") is True and remove_model("mine") is False
    assert "mine" not in {r.name for r in list_models()}
    with pytest.raises(UsageError, match="unknown model 'mine'"):
        load_model("mine")
    assert remove_model("fixture") is True and not store.model_files("fixture").dir.exists()
    import_model("mine", ckpt.dir, unverified=True)
    with pytest.raises(UsageError, match="imported model"):
        download_model("mine")


# --------------------------------------------------------------------------- two processes


CHILD = r"""
import json, logging, socket, sys

real_connect = socket.socket.connect
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise OSError("tests never touch the internet")
    return real_connect(self, address)
socket.socket.connect = connect

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from types import MappingProxyType
from seedark.models import registry, cache as store

spec = json.loads(sys.argv[1])
files = tuple(registry.SourceFile(f["name"], tuple(f["urls"]), f["sha256"], f["size"]) for f in spec.pop("files"))
registry.MODELS = MappingProxyType({**registry.MODELS, spec["name"]: registry.ModelRecord(files=files, **spec)})
weights = store.load_model(spec["name"])
print(json.dumps({"width": weights.spec.width, "sha256": store.read_provenance(spec["name"])["weights_sha256"]}))
"""


class _StderrWatch:
    """Reads a child's stderr as it comes; ``seen`` is set when a line contains ``text`` or the stream ends."""

    def __init__(self, proc: subprocess.Popen[str], text: str) -> None:
        self.lines: list[str] = []
        self.text = text
        self.found = False
        self.seen = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line)
            if self.text in line:
                self.found = True
                self.seen.set()
        self.seen.set()  # end of the stream: the text will not come

    def output(self) -> str:
        self.thread.join(timeout=120)
        return "".join(self.lines)


def test_two_processes_download_once(server: FaultyServer, ckpt: Checkpoint, tmp_path: Path) -> None:
    """The second process arrives while the first holds the lock (its download is held by the
    server until the test releases it), waits, then finds the model cached. No clocks involved."""
    release = threading.Event()
    index_route = server.add(f"/fixture/{INDEX_NAME}", ckpt.index)
    route = server.add(f"/fixture/{DATA_NAME}", ckpt.data, hold=release, hold_times=1)
    record = record_for(server, ckpt)
    spec = {
        "name": record.name,
        "description": record.description,
        "licence": record.licence,
        "packing": record.packing,
        "sensor": record.sensor,
        "homepage": record.homepage,
        "files": [{"name": f.name, "urls": list(f.urls), "sha256": f.sha256, "size": f.size} for f in record.files],
    }
    env = child_env(SEEDARK_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-c", CHILD, json.dumps(spec)]
    pipes = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    first = subprocess.Popen(cmd, **pipes)  # type: ignore[call-overload]
    second: subprocess.Popen[str] | None = None
    try:
        # The server has the first process's data request: it holds the model's lock now.
        assert route.held.wait(120), "the first process never asked for the data file"
        second = subprocess.Popen(cmd, **pipes)  # type: ignore[call-overload]
        watch = _StderrWatch(second, "waiting for it")
        assert watch.seen.wait(120) and watch.found, watch.output()
    except BaseException:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
        raise
    finally:
        release.set()  # the first download goes on and completes
    out1, err1 = first.communicate(timeout=120)
    assert second is not None and second.stdout is not None
    second.wait(timeout=120)
    out2, err2 = second.stdout.read(), watch.output()
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert json.loads(out1) == json.loads(out2) and json.loads(out1)["width"] == 4
    assert "waiting for it" not in err1 and "already in the cache" not in err1
    # the second process waited on the lock, then found the model cached and downloaded nothing
    assert err2.index("waiting for it") < err2.index("already in the cache"), err2
    assert len(route.hits) == 1 and route.full_downloads() == 1
    assert len(index_route.hits) == 1


# --------------------------------------------------------------------------- the fixture writer itself


def test_tfwriter_round_trips(ckpt: Checkpoint) -> None:
    header, entries = read_index(ckpt.dir / INDEX_NAME)
    assert header.num_shards == 1 and len(entries) == 120  # like the official files
    assert expected_data_size(entries) == len(ckpt.data)
    assert {"beta1_power", "beta2_power", "Variable_3", "g_conv10/weights/Adam_1"} <= set(entries)
    loaded = weights_module.load_tf_checkpoint(ckpt.dir)
    assert same_weights(loaded, ckpt.weights)


def test_tfwriter_matches_tensorflow_byte_for_byte(tmp_path: Path) -> None:
    src = DATA_DIR / "tf_sony_w4"
    if not (src / INDEX_NAME).is_file():
        pytest.skip("TF-made fixture not present")
    tensors = read_checkpoint(src / "model.ckpt", include=lambda name: True)
    write_checkpoint(tmp_path / "model.ckpt", tensors)
    assert (tmp_path / INDEX_NAME).read_bytes() == (src / INDEX_NAME).read_bytes()
    assert (tmp_path / DATA_NAME).read_bytes() == (src / DATA_NAME).read_bytes()
