"""A view lives an hour at most: after that it is not served, and its decrypted file is removed by the
next read or prune; a decrypt a crash interrupted is removed at start-up."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from openbwv.server.errors import StoreError
from openbwv.server.media import VIEW_LIFETIME, ViewCache

CLIP = "0b5c4c8e-8a52-4e8f-9d7c-3f2a1b0c9d8e"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def opened(cache: ViewCache, viewer: str = "user:evan") -> tuple[str, Path]:
    view_id, work = cache.new_workdir(CLIP)
    mp4 = work / "decrypted.mp4"
    mp4.write_bytes(b"\0\0\0\x18ftypisom" + bytes(100))
    (work / "decrypted.ts").write_bytes(b"plaintext transport stream")
    view = cache.keep(CLIP, view_id, viewer, mp4, 2.0, work)
    return view_id, view.path


def test_a_view_is_served_until_it_expires_then_removed(tmp_path):
    clock = Clock(T0)
    cache = ViewCache(tmp_path / "views", clock=clock)
    view_id, path = opened(cache)
    assert not any((tmp_path / "views" / ".work").iterdir())  # the decrypted TS went with the work directory
    clock.now = T0 + VIEW_LIFETIME - timedelta(seconds=1)
    assert cache.get(CLIP, view_id).path == path
    assert cache.live_view_of(CLIP, "user:evan").view_id == view_id
    assert cache.live_view_of(CLIP, "user:sue") is None  # views are their opener's
    clock.now = T0 + VIEW_LIFETIME
    assert cache.live_view_of(CLIP, "user:evan") is None
    assert cache.get(CLIP, view_id) is None
    assert not path.exists() and not path.parent.exists()


def test_prune_removes_expired_views_and_keeps_live_ones(tmp_path):
    clock = Clock(T0)
    cache = ViewCache(tmp_path / "views", clock=clock)
    old_id, old_path = opened(cache)
    clock.now = T0 + timedelta(minutes=50)
    new_id, new_path = opened(cache, "user:sue")
    clock.now = T0 + timedelta(minutes=61)
    assert cache.prune() == 1
    assert not old_path.exists() and new_path.exists()
    assert cache.get(CLIP, new_id) is not None and cache.get(CLIP, old_id) is None


def test_dropping_a_clip_removes_all_its_views(tmp_path):
    cache = ViewCache(tmp_path / "views", clock=Clock(T0))
    opened(cache), opened(cache, "user:sue")
    assert cache.drop_clip(CLIP) == 2
    assert not (tmp_path / "views" / CLIP).exists()
    assert cache.drop_clip(CLIP) == 0


def test_a_decrypt_interrupted_by_a_crash_is_cleared_at_start_up(tmp_path):
    cache = ViewCache(tmp_path / "views", clock=Clock(T0))
    _, work = cache.new_workdir(CLIP)
    (work / "decrypted.ts").write_bytes(b"plaintext")
    cache.clear_unfinished()
    assert not work.exists()


def test_ids_from_outside_never_reach_the_file_system(tmp_path):
    cache = ViewCache(tmp_path / "views", clock=Clock(T0))
    assert cache.get("../../etc", "passwd") is None
    assert cache.get(CLIP, "../" + "0" * 29) is None
    assert cache.live_view_of("..", "user:evan") is None
    assert cache.drop_clip("..") == 0


def test_a_view_being_made_is_found_not_ready_then_ready_in_the_growing_files_place(tmp_path):
    cache = ViewCache(tmp_path / "views", clock=Clock(T0))
    view_id, work = cache.new_workdir(CLIP)
    view, making = cache.begin(CLIP, view_id, "user:evan", work)
    assert cache.making(view_id) is making
    assert (view.ready, view.path.name) == (False, "live.mp4")
    view.path.write_bytes(b"\0\0\0\x18ftypiso5" + bytes(50))  # the first fragment, as it is written
    seen = cache.live_view_of(CLIP, "user:evan")
    assert (seen.view_id, seen.ready, seen.size) == (view_id, False, 62)
    final = work / "clip.mp4"
    final.write_bytes(b"\0\0\0\x18ftypisom" + bytes(100))
    ready = cache.finish(view, final, 2.0)
    assert (ready.ready, ready.path.name, ready.duration_s) == (True, "clip.mp4", 2.0)
    assert sorted(p.name for p in ready.path.parent.iterdir()) == ["clip.mp4", "view.json"]  # the growing file went


def test_views_a_crash_left_half_made_are_removed_at_start_up_and_ready_ones_kept(tmp_path):
    cache = ViewCache(tmp_path / "views", clock=Clock(T0))
    kept_id, kept = opened(cache)
    half_id, work = cache.new_workdir(CLIP)
    half, _ = cache.begin(CLIP, half_id, "user:sue", work)
    half.path.write_bytes(b"partly decrypted footage")
    restarted = ViewCache(tmp_path / "views", clock=Clock(T0))  # a new process: it is making nothing
    assert restarted.clear_unfinished() == 1
    assert not half.path.parent.exists() and not work.exists()
    assert restarted.get(CLIP, kept_id).path == kept


def test_a_view_whose_clip_is_deleted_while_it_is_made_is_not_recreated(tmp_path):
    cache = ViewCache(tmp_path / "views", clock=Clock(T0))
    view_id, work = cache.new_workdir(CLIP)
    view, _ = cache.begin(CLIP, view_id, "user:evan", work)
    assert cache.drop_clip(CLIP) == 1  # the retention sweep
    final = work / "clip.mp4"
    final.write_bytes(b"decrypted")
    with pytest.raises(StoreError, match="removed while it was made"):
        cache.finish(view, final, 1.0)
    assert not (tmp_path / "views" / CLIP).exists()
