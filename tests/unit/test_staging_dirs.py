"""Staging files live in a private directory per run, never a fixed path under the temp dir.

Two overlapping runs once shared `<tmp>/tbs-heavydb-dumps` and broke each other; the bytecode
cache of the HeavyDB stand-in was a fixed `<tmp>/heavydb-sandbox-pycache` anyone could create.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandbox.heavydb.testing import _pycache_dir
from tasks.backup import default_dump_dir, private_staging_dir, remove_staging_dir

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp dir of this test (so nothing is left in the real one)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_each_call_makes_a_new_private_directory(own_tempdir: Path) -> None:
    made = [default_dump_dir() for _ in range(3)]
    try:
        assert len(set(made)) == 3
        for path in made:
            assert Path(path).parent == own_tempdir
            assert Path(path).name.startswith("tbs-heavydb-dumps-")
            assert Path(path).is_dir() and not any(Path(path).iterdir())
            assert _mode(path) == 0o700
            assert os.stat(path).st_uid == os.getuid()
    finally:
        for path in made:
            remove_staging_dir(path)
    assert not any(own_tempdir.iterdir())


def test_concurrent_callers_in_one_process_never_share() -> None:
    with ThreadPoolExecutor(16) as pool:
        made = list(pool.map(lambda _: private_staging_dir("tbs-test-"), range(64)))
    try:
        assert len(set(made)) == 64
    finally:
        for path in made:
            remove_staging_dir(path)


def test_remove_staging_dir_takes_the_contents_and_is_idempotent() -> None:
    path = private_staging_dir()
    (Path(path) / "run-1").mkdir()
    (Path(path) / "run-1" / "hot.dump").write_bytes(b"archive")
    remove_staging_dir(path)
    assert not Path(path).exists()
    remove_staging_dir(path)  # again: nothing to do, no error


def test_two_overlapping_runs_get_their_own_and_each_removes_it_at_exit(
    own_tempdir: Path,
) -> None:
    """Two processes at once (two flow runs): different directories, both gone at exit."""
    script = (
        "import os, sys\n"
        "from tasks.backup import default_dump_dir\n"
        "d = default_dump_dir()\n"
        "open(os.path.join(d, 'hot.dump'), 'wb').write(b'left behind by a failed task')\n"
        "print(d, flush=True)\n"
        "sys.stdin.read()\n"  # both are alive at once: wait until the test lets them go
    )
    env = dict(os.environ, TMPDIR=str(own_tempdir), PYTHONPATH=str(ROOT))
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        for _ in range(2)
    ]
    try:
        made = [run.stdout.readline().strip() for run in runs if run.stdout is not None]
        assert len(made) == 2 and made[0] != made[1]
        for path in made:
            assert Path(path).parent == own_tempdir and _mode(path) == 0o700
            assert (Path(path) / "hot.dump").exists()  # both exist at the same time
    finally:
        for run in runs:
            run.communicate("", timeout=60)
    assert [run.returncode for run in runs] == [0, 0]
    assert not any(own_tempdir.iterdir())  # removed, contents and all, when each run ended


def test_the_heavydb_bytecode_cache_is_this_users_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    cache = _pycache_dir()
    assert cache == home / ".cache" / "tbs-emergency" / "pycache"
    assert _mode(cache) == 0o700
    assert not str(cache).startswith(tempfile.gettempdir())
    # one others can write into is not used: running without a cache is slower, not unsafe
    os.chmod(cache, 0o777)
    assert _pycache_dir() is None
