"""The Docker Engine is the oracle for ``USER``: imagegate never passes what the engine runs as uid 0.

A generated table of user strings (signs, leading zeros, 32-bit wrap-around, groups, names that
``/etc/passwd`` maps to uid 0 in odd ways) is put into real images — the busybox base plus a layer
with one ``/etc/passwd`` — pushed to the local registry, run with ``docker run IMAGE id -u``, and
checked with ``imagegate.check(backend="docker")``. Where imagegate passes, the engine must run the
container as the very uid imagegate names; where the engine runs uid 0, imagegate must refuse.
The runtime override (``docker run --user``, the operator's ``user=``) is tested the same way.
"""

from __future__ import annotations

import itertools
import re
import subprocess

import httpx
import pytest

import imagegate
from imagegate import Outcome, Policy, parse_reference
from tests.integration.conftest import Stack, unique
from tests.support.oci import DOCKER_MANIFEST, OCI_MANIFEST, Layer, make_image, make_layer
from tests.support.push import push_image

pytestmark = pytest.mark.integration

PASSWD = "\n".join(
    [
        "root:x:0:0:root:/root:/bin/sh",
        "app:x:1000:1000::/home/app:/bin/sh",
        "nobody:x:65534:65534::/nonexistent:/bin/false",
        "toor:x:0:0::/:/bin/sh",  # a second name for uid 0
        "evil:x:4294967296:0::/:/bin/sh",  # 2**32: truncated to uid 0
        "big:x:4294968296:0::/:/bin/sh",  # 2**32 + 1000: truncated to uid 1000
        "junk:x:abc:0::/:/bin/sh",  # not a number: read as 0
        "plus:x:+0:0::/:/bin/sh",
        "neg:x:-4294967296:0::/:/bin/sh",
        "sp:x: 7:0::/:/bin/sh",  # ' 7' is not a number to Atoi: read as 0
        "  lead:x:1001:0::/:/bin/sh  ",  # the line is trimmed: 'lead' is uid 1001
        "dup:x:1002:0::/:/bin/sh",
        "dup:x:0:0::/:/bin/sh",  # the first match wins
        "\u00a0nb:x:0:0::/:/bin/sh",  # Go's TrimSpace trims U+00A0 too: this line is 'nb', uid 0, and it comes first
        "nb:x:1003:0::/:/bin/sh",
        "\x1cfs:x:0:0::/:/bin/sh",  # U+001C is no space to Go (Python's str.strip would trim it): not 'fs'
        "fs:x:1004:0::/:/bin/sh",
        "",
    ]
)
NAMES = ["root", "Root", "app", "nobody", "toor", "evil", "big", "junk", "plus", "neg", "sp", "lead", "dup", "nb", "fs",
         "ghost"]
NUMBERS = ["0", "1000", "65534", "2147483647", "2147483648", "4294967296", "4294968296"]


def _user_table() -> list[str]:
    table = ["", ":0", ":1000", "1000:1000:extra", " 1000", "1000 ", "\t0"]
    table += [sign + zeros + number for sign, zeros, number in itertools.product(["", "+", "-"], ["", "0"], NUMBERS)]
    table += [number + group for number, group in itertools.product(["0", "1000"], [":0", ":1000", ":root", ":app"])]
    table += [name + group for name, group in itertools.product(NAMES, ["", ":0"])]
    return list(dict.fromkeys(table))


USERS = _user_table()
OVERRIDES = ["+0", "-0", "00", "4294967296", "toor", "junk", "sp", "dup", "1000", "app", "big", " 0", "ghost"]


@pytest.fixture(scope="module")
def base_layers(stack: Stack) -> list[Layer]:
    """The busybox base image's layers, read back from the local registry."""
    ref = parse_reference(stack.env["IMAGEGATE_BUSYBOX_IMAGE_DIGEST"])
    with httpx.Client(base_url=stack.registry_url, timeout=30) as client:
        manifest = client.get(f"/v2/{ref.repository}/manifests/{ref.digest}",
                              headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"}).json()
        config = client.get(f"/v2/{ref.repository}/blobs/{manifest['config']['digest']}").json()
        return [
            Layer(entry["mediaType"], client.get(f"/v2/{ref.repository}/blobs/{entry['digest']}").content, diff_id=diff_id)
            for entry, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"])
        ]


def _engine_uid(image: str, user: str | None = None) -> int | None:
    """What ``id -u`` prints in a container of *image* (None: the engine refused to start it)."""
    args = ["docker", "run", "--rm", "--network", "none"]
    if user is not None:
        args += ["--user", user]
    done = subprocess.run([*args, image, "id", "-u"], capture_output=True, text=True, timeout=120)
    return int(done.stdout.strip()) if done.returncode == 0 else None


def _push(stack: Stack, base_layers: list[Layer], user: str | None) -> str:
    image = make_image(user=user, layers=[*base_layers, make_layer({"etc/passwd": PASSWD.encode()})], oci=False,
                       entrypoint=None, cmd=["sh"])
    repository = f"oracle/{unique('user')}"
    digest = push_image(stack.registry_url, repository, image, tag="1.0.0")
    return f"{stack.registry}/{repository}:1.0.0@{digest}"


def _claimed_uid(message: str) -> int | None:
    match = re.search(r"= uid (\d+)", message) or re.search(r"runs as '(\d+)(?::[^']*)?'", message)
    return int(match.group(1)) if match else None


def _agree(reference: str, engine: int | None, report: imagegate.Report, what: str) -> None:
    result = report.result("non-root")
    if engine == 0:
        assert result.outcome is Outcome.FAIL, f"{what}: the engine runs uid 0 but imagegate says {result.message!r}"
    if result.outcome is Outcome.PASS:
        assert engine is not None and engine != 0, f"{what}: imagegate passed what the engine ran as {engine}"
        assert _claimed_uid(result.message) == engine, f"{what}: imagegate says {result.message!r}, the engine ran uid {engine}"


@pytest.mark.parametrize("user", USERS, ids=[repr(u) for u in USERS])
def test_image_user_agrees_with_the_engine(user: str, stack: Stack, base_layers: list[Layer], docker_client: object) -> None:
    reference = _push(stack, base_layers, user)
    engine = _engine_uid(reference)
    report = imagegate.check(reference, backend="docker", policy=Policy())
    _agree(reference, engine, report, f"USER {user!r}")


@pytest.mark.parametrize("user", OVERRIDES, ids=[repr(u) for u in OVERRIDES])
def test_runtime_user_override_agrees_with_the_engine(user: str, stack: Stack, base_layers: list[Layer], docker_client: object) -> None:
    reference = _push(stack, base_layers, "1000")
    engine = _engine_uid(reference, user)
    report = imagegate.check(reference, backend="docker", user=user, policy=Policy())
    _agree(reference, engine, report, f"--user {user!r}")


def test_the_table_exercises_both_verdicts(stack: Stack, base_layers: list[Layer], docker_client: object) -> None:
    """Some of the table must pass (named and numeric) and match the engine, so the oracle is not vacuous."""
    for user, uid in (("app", 1000), ("lead", 1001), ("1000:0", 1000), ("nobody", 65534)):
        reference = _push(stack, base_layers, user)
        report = imagegate.check(reference, backend="docker", policy=Policy())
        assert report.result("non-root").outcome is Outcome.PASS, report.render_text()
        assert _engine_uid(reference) == uid
    for user in ("+0", "-0", "toor", "evil", "junk", "sp", "plus", "neg"):  # root to the engine, refused by us
        reference = _push(stack, base_layers, user)
        assert _engine_uid(reference) == 0, user
        assert imagegate.check(reference, backend="docker").result("non-root").outcome is Outcome.FAIL
