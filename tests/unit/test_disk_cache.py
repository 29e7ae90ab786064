"""The host's registry cache (imagegate._diskcache) and the registry client over it.

The client runs against the in-process fake registry; the cache is real files in a temporary
directory. Several OS processes write and read one entry at once to show no reader sees a torn
file; a corrupted or altered entry is refetched; the size bound evicts the least recently used;
an unsafe directory is refused and the check still works without it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from imagegate import DockerConfig, RegistryClient, parse_reference
from imagegate._diskcache import DiskCache, default_directory, parse_size
from tests.support.fakeregistry import FakeRegistry
from tests.support.oci import make_image

REF = "registry.test/team/etl:1.4.2"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "v1").rglob("*") if p.is_file() and not p.name.startswith((".tmp-", ".lock-")))


@pytest.fixture
def registry() -> FakeRegistry:
    reg = FakeRegistry(negotiation="distribution")
    passwd = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"
    reg.put_image("team/etl", make_image(user="1000"), tag="1.4.2")
    reg.put_image("team/app", make_image(user="app", layers=[{"etc/passwd": passwd}, {"etc/hostname": b"x\n"}]), tag="2.0.0")
    return reg


def client(registry: FakeRegistry, cache: DiskCache | bool) -> RegistryClient:
    return RegistryClient(transport=registry.transport, docker_config=DockerConfig({}), disk_cache=cache)


# -- the registry client over the cache -------------------------------------------------------------------


def test_a_second_process_fetches_nothing_but_one_head(registry: FakeRegistry, tmp_path: Path) -> None:
    first = client(registry, DiskCache(tmp_path / "c")).inspect(parse_reference(REF))
    assert (registry.count("HEAD"), registry.count("GET", "manifests"), registry.count("GET", "blobs")) == (1, 1, 1)
    registry.reset_requests()
    again = client(registry, DiskCache(tmp_path / "c")).inspect(parse_reference(REF))  # a new client: a new process
    assert again == first and again.user == "1000"
    assert registry.count() == 1 and registry.count("HEAD", "manifests") == 1  # the tag's HEAD, nothing else


def test_a_moved_tag_is_seen_by_the_next_process(registry: FakeRegistry, tmp_path: Path) -> None:
    ref = parse_reference(REF)
    assert client(registry, DiskCache(tmp_path / "c")).inspect(ref).user == "1000"
    moved = registry.put_image("team/etl", make_image(user="2000"))
    registry.move_tag("team/etl", "1.4.2", moved)
    facts = client(registry, DiskCache(tmp_path / "c")).inspect(ref)
    assert facts.digest == moved and facts.user == "2000"


def test_entries_answer_only_for_the_repository_that_served_them(registry: FakeRegistry, tmp_path: Path) -> None:
    image = make_image(user="1000")
    registry.put_image("team/other", image, tag="1.4.2")  # the same bytes in another repository
    client(registry, DiskCache(tmp_path / "c")).inspect(parse_reference(REF))
    registry.reset_requests()
    client(registry, DiskCache(tmp_path / "c")).inspect(parse_reference("registry.test/team/other:1.4.2"))
    assert registry.count("GET", "manifests") == 1 and registry.count("GET", "blobs") == 1


@pytest.mark.parametrize("damage", ["flip a byte of the body", "truncate", "swap in other bytes", "garbage"])
def test_a_damaged_entry_is_discarded_and_refetched(registry: FakeRegistry, tmp_path: Path, damage: str) -> None:
    root = tmp_path / "c"
    first = client(registry, DiskCache(root)).inspect(parse_reference(REF))
    entries = files(root)
    assert len(entries) == 2  # the manifest and the config
    other = make_image(user="0")
    for path in entries:
        data = path.read_bytes()
        if damage == "flip a byte of the body":
            data = data[:-2] + bytes([data[-2] ^ 0x01]) + data[-1:]
        elif damage == "truncate":
            data = data[: len(data) - 5]
        elif damage == "swap in other bytes":  # the entry's own header over a root image's config
            head = data[: data.index(b"\n", len(b"imagegate-cache 1\n")) + 1]
            data = head + other.config.data
        else:
            data = os.urandom(64)
        path.write_bytes(data)
    registry.reset_requests()
    facts = client(registry, DiskCache(root)).inspect(parse_reference(REF))
    assert facts == first and facts.user == "1000"  # never the altered content
    assert registry.count("GET", "manifests") == 1 and registry.count("GET", "blobs") == 1  # refetched
    registry.reset_requests()
    client(registry, DiskCache(root)).inspect(parse_reference(REF))
    assert registry.count("GET") == 0  # and stored again, whole


def test_passwd_found_in_layers_is_kept_per_layer(registry: FakeRegistry, tmp_path: Path) -> None:
    ref = parse_reference("registry.test/team/app:2.0.0")
    c = client(registry, DiskCache(tmp_path / "c"))
    lookup = c.passwd(c.inspect(ref))
    assert lookup.entries and lookup.problem is None
    layer_gets = registry.count("GET", "blobs") - 1  # minus the config
    assert layer_gets == 2
    registry.reset_requests()
    fresh = client(registry, DiskCache(tmp_path / "c"))
    again = fresh.passwd(fresh.inspect(ref))
    assert again == lookup and registry.count("GET") == 0


def test_off_means_no_file_and_no_head_first(registry: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_REGISTRY_CACHE", "off")
    monkeypatch.setenv("IMAGEGATE_REGISTRY_CACHE_DIR", str(tmp_path / "c"))
    c = client(registry, True)
    assert c.disk_cache is None
    c.inspect(parse_reference(REF))
    assert registry.count("HEAD") == 0 and not (tmp_path / "c").exists()


def test_an_injected_transport_gets_no_disk_cache_by_default(registry: FakeRegistry) -> None:
    assert RegistryClient(transport=registry.transport).disk_cache is None


def test_where_the_cache_lives(tmp_path: Path) -> None:
    assert default_directory({"IMAGEGATE_REGISTRY_CACHE_DIR": "/a", "IMAGEGATE_CACHE_DIR": "/b"}) == "/a"
    assert default_directory({"IMAGEGATE_CACHE_DIR": "/b", "XDG_CACHE_HOME": "/x"}) == "/b/registry"
    assert default_directory({"XDG_CACHE_HOME": "/x"}) == "/x/imagegate/registry"
    assert default_directory({}) == os.path.expanduser("~/.cache/imagegate/registry")
    assert parse_size("256MB") == 256 << 20 and parse_size("1GiB") == 1 << 30 and parse_size("100") == 100
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


# -- the cache itself ---------------------------------------------------------------------------------------


def test_files_are_private(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    body = b'{"a": 1}'
    cache.put("config", "r.test", "team/etl", digest(body), body)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    (entry,) = files(tmp_path / "c")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in (tmp_path / "c" / "v1").rglob("*") if p.is_dir())
    assert cache.get("config", "r.test", "team/etl", digest(body), limit=100) == (body, {})
    assert cache.get("config", "r.test", "team/etl", digest(body), limit=3) is None  # over the caller's cap


def test_content_that_does_not_hash_to_its_key_is_refused(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    cache.put("config", "r.test", "team/etl", digest(b"one"), b"two")  # a caller bug: the key lies
    assert cache.get("config", "r.test", "team/etl", digest(b"one"), limit=100) is None
    assert files(tmp_path / "c") == []  # discarded


def test_a_symlinked_entry_is_not_followed(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    body = b"x"
    cache.put("config", "r.test", "team/etl", digest(body), body)
    (entry,) = files(tmp_path / "c")
    planted = tmp_path / "planted"
    planted.write_bytes(entry.read_bytes())
    entry.unlink()
    entry.symlink_to(planted)
    assert cache.get("config", "r.test", "team/etl", digest(body), limit=100) is None


def _hammer(root: str, body: bytes, rounds: int, out: "multiprocessing.Queue[tuple[int, int]]") -> None:
    cache = DiskCache(root)
    key = digest(body)
    hits = misses = 0
    for _ in range(rounds):
        found = cache.get("config", "r.test", "team/etl", key, limit=len(body))
        if found is None:
            misses += 1
            cache.put("config", "r.test", "team/etl", key, body)
        else:
            assert found[0] == body, "a reader saw a torn or foreign entry"
            hits += 1
        if hits % 7 == 0:
            DiskCache(root).clear()  # entries vanish under the readers too
    out.put((hits, misses))


def test_processes_writing_and_reading_one_entry_never_see_a_torn_file(tmp_path: Path) -> None:
    body = os.urandom(3 << 20)  # large enough that a write is many syscalls
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path / "c"), body, 40, out)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    results = [out.get(timeout=5) for _ in procs]
    assert sum(h for h, _ in results) > 0 and sum(m for _, m in results) > 0
    assert not [p for p in (tmp_path / "c").rglob(".tmp-*")]  # no temporary file left behind
    cache = DiskCache(tmp_path / "c")
    found = cache.get("config", "r.test", "team/etl", digest(body), limit=len(body))
    assert found is None or found[0] == body


def _fetch_once(root: str, log: str, body: bytes, start: float) -> None:
    while time.time() < start:
        time.sleep(0.001)  # all processes miss at the same moment
    cache = DiskCache(root)
    key = digest(body)
    if cache.get("config", "r.test", "team/etl", key, limit=len(body)) is None:
        with cache.locked("config", "r.test", "team/etl", key, wait=30):
            if cache.get("config", "r.test", "team/etl", key, limit=len(body)) is None:
                with open(log, "a") as out:
                    out.write("fetch\n")  # what would be the registry request
                time.sleep(0.2)
                cache.put("config", "r.test", "team/etl", key, body)
    found = cache.get("config", "r.test", "team/etl", key, limit=len(body))
    assert found is not None and found[0] == body


def test_processes_missing_one_entry_at_once_fetch_it_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    log = tmp_path / "fetches"
    start = time.time() + 0.5
    procs = [ctx.Process(target=_fetch_once, args=(str(tmp_path / "c"), str(log), b"config bytes", start)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    assert log.read_text().splitlines() == ["fetch"]


def test_a_waiter_goes_ahead_when_the_fetcher_takes_too_long(tmp_path: Path) -> None:
    holder, waiter = DiskCache(tmp_path / "c"), DiskCache(tmp_path / "c")
    with holder.locked("config", "r", "p", "k", wait=1):
        started = time.monotonic()
        with waiter.locked("config", "r", "p", "k", wait=0.3):
            waited = time.monotonic() - started
    assert 0.25 <= waited < 5


def test_the_size_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    root = tmp_path / "c"
    writer = DiskCache(root, max_bytes=10 << 20)
    bodies = [bytes([i]) * 4000 for i in range(12)]
    now = time.time()
    for i, body in enumerate(bodies):
        writer.put("config", "r.test", "team/etl", digest(body), body)
        (path,) = [p for p in files(root) if p.read_bytes().endswith(body)]
        os.utime(path, (now - 10_000 + i, now - 10_000 + i))  # written in this order, hours ago
    assert writer.get("config", "r.test", "team/etl", digest(bodies[0]), limit=4000) is not None  # the oldest, used now
    stats = DiskCache(root, max_bytes=40_000).prune()
    assert stats.bytes <= 40_000 * 3 // 4 and stats.entries == len(files(root)) < 12
    kept = {i for i, body in enumerate(bodies) if any(p.read_bytes().endswith(body) for p in files(root))}
    assert 0 in kept  # the recently used one stayed
    evicted = set(range(12)) - kept
    assert evicted and max(evicted) < min(kept - {0})  # the others went oldest first


def test_a_writer_keeps_the_cache_within_its_bound(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", max_bytes=64_000)
    for i in range(200):
        body = i.to_bytes(2, "big") * 1000
        cache.put("config", "r.test", "team/etl", digest(body), body)
    total = sum(p.stat().st_size for p in files(tmp_path / "c"))
    assert total <= 64_000 + 64_000 // 16 + 3000  # the bound, plus what is written between two checks


def test_clear_removes_only_entries(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = DiskCache(root)
    cache.put("config", "r.test", "team/etl", digest(b"a"), b"a")
    (root / "keep-me").write_text("not ours")
    assert cache.clear() == 1 and cache.stats().entries == 0
    assert (root / "keep-me").exists()


# -- unsafe directories -------------------------------------------------------------------------------------


def test_a_group_or_world_writable_directory_is_refused(registry: FakeRegistry, tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    root.chmod(0o777)
    cache = DiskCache(root)
    facts = client(registry, cache).inspect(parse_reference(REF))  # the check still works, without the cache
    assert facts.user == "1000"
    assert cache.refused is not None and "writable" in cache.refused
    assert not (root / "v1").exists()
    root.chmod(0o720)
    assert DiskCache(root).get("config", "r", "p", digest(b""), limit=1) is None
    refused = DiskCache(root)
    refused.put("config", "r", "p", digest(b""), b"")
    assert refused.refused is not None and "group" in refused.refused and not (root / "v1").exists()


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        root = tmp_path / "c"
        root.mkdir(mode=0o700)
        os.chown(root, 4242, 4242)
    else:  # a directory this user cannot have made: the root directory itself
        root = Path("/")
        assert root.stat().st_uid != os.geteuid()
    cache = DiskCache(root)
    cache.put("config", "r.test", "team/etl", digest(b"x"), b"x")
    assert cache.refused is not None and "owned by uid" in cache.refused
    assert cache.get("config", "r.test", "team/etl", digest(b"x"), limit=10) is None


def test_a_readable_directory_of_ours_is_made_private(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    DiskCache(root).put("config", "r.test", "team/etl", digest(b"x"), b"x")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_the_scheme_of_a_plain_http_registry_is_remembered(tmp_path: Path) -> None:
    import httpx

    seen: list[str] = []
    image = make_image(user="1000")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.scheme}")
        if request.url.scheme == "https":
            raise httpx.ConnectError("no TLS here")
        if "/manifests/" in request.url.path:
            headers = {"Content-Type": image.manifest.media_type, "Docker-Content-Digest": image.digest}
            return httpx.Response(200, content=b"" if request.method == "HEAD" else image.manifest.data, headers=headers)
        return httpx.Response(200, content=image.config.data)

    ref = parse_reference("127.0.0.1:5999/team/etl:1.0.0")
    cache = tmp_path / "c"
    for _ in range(2):
        c = RegistryClient(transport=httpx.MockTransport(handler), docker_config=DockerConfig({}), disk_cache=DiskCache(cache))
        c.resolve(ref)
    assert seen == ["HEAD https", "HEAD http", "HEAD http"]  # the second process asked http first
