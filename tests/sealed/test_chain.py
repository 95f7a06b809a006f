"""Each device's segments form one chain: a missing, replayed, swapped or foreign segment shows.

The chain is checked from public facts alone (sequence, previous hash,
segment hash), so the dock and anyone holding the files can run it.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.sealed.chain import ChainLink, check_chains, check_link, summarize
from openbwv.sealed.errors import ChainFork, ChainGap, DuplicateSegment
from openbwv.sealed.keys import DeviceKey
from openbwv.sealed.layout import RECORD_MEDIA
from openbwv.sealed.reader import verify_file
from openbwv.sealed.storage import DeviceStorage

from .segment_kit import CHUNK_LIMIT, DEVICE_ID, Registry, random_records

OTHER_DEVICE = "cam-0043"


def link_of(path: Path, registry) -> ChainLink:
    v = verify_file(path, registry)
    return ChainLink(v.device_id, v.sequence, v.preamble.prev_hash, v.segment_hash, str(path))


def record_chain(directory: Path, device: DeviceKey, server_keys, count: int) -> list[Path]:
    storage = DeviceStorage(directory, device, server_keys.public, chunk_limit=CHUNK_LIMIT)
    paths = []
    for n in range(count):
        seg = storage.open_segment(clip_id=uuid.UUID(int=n), segment_index=n, start_utc_us=1_700_000_000_000_000 + n)
        seg.append(RECORD_MEDIA, b"frame %d" % n)
        paths.append(seg.seal(end_utc_us=1_700_000_000_000_001 + n).path)
    return paths


@pytest.fixture(scope="module")
def other_device() -> DeviceKey:
    return DeviceKey.generate(OTHER_DEVICE)


@pytest.fixture(scope="module")
def both(device_key, other_device) -> Registry:
    return Registry(device_key, other_device)


@pytest.fixture(scope="module")
def chain(device_key, server_keys, both, tmp_path_factory) -> list[ChainLink]:
    """Segments 1..4 of one device, as recorded, verified."""
    paths = record_chain(tmp_path_factory.mktemp("chain"), device_key, server_keys, 4)
    return [link_of(p, both) for p in paths]


@pytest.fixture(scope="module")
def other_chain(other_device, server_keys, both, tmp_path_factory) -> list[ChainLink]:
    paths = record_chain(tmp_path_factory.mktemp("other"), other_device, server_keys, 3)
    return [link_of(p, both) for p in paths]


def only(problems, kind):
    assert len(problems) == 1 and isinstance(problems[0], kind), problems
    return problems[0]


def test_a_continuous_chain_has_no_problems(chain):
    assert [s.sequence for s in chain] == [1, 2, 3, 4]
    assert check_chains(chain) == []


@settings(max_examples=30, deadline=None)
@given(order=st.permutations(range(4)))
def test_the_order_segments_are_found_in_does_not_matter(chain, order):
    assert check_chains([chain[i] for i in order]) == []


def test_a_missing_middle_segment_is_a_gap_naming_the_missing_sequence(chain):
    gap = only(check_chains([chain[0], chain[2], chain[3]]), ChainGap)

    assert "segment 2 is missing" in str(gap)
    assert gap.path == chain[2].path  # reported on the segment after the gap
    assert chain[0].path in str(gap)


def test_several_missing_segments_are_named_as_a_range(chain):
    gap = only(check_chains([chain[0], chain[3]]), ChainGap)

    assert "segments 2..3 (2) are missing" in str(gap)


def test_segments_before_the_first_one_present_are_not_missing(chain):
    """Earlier segments may already have been uploaded and freed."""
    assert check_chains(chain[2:]) == []


def test_the_same_file_twice_is_a_duplicate(chain):
    dup = only(check_chains([*chain, chain[1]]), DuplicateSegment)

    assert f"{DEVICE_ID} #2" in str(dup)


def test_a_copy_of_a_segment_under_another_name_is_a_duplicate(chain):
    copy = dataclasses.replace(chain[1], path="/media/usb/copy.bwv")

    only(check_chains([*chain, copy]), DuplicateSegment)


def test_two_different_segments_with_the_same_sequence_are_a_fork(chain, sealer, both, tmp_path):
    rival = sealer.seal(tmp_path, random_records(), sequence=2, prev_hash=chain[0].segment_hash)
    rival_link = link_of(rival.path, both)

    problems = check_chains([*chain, rival_link])

    assert problems and all(isinstance(p, ChainFork) for p in problems)
    assert any(f"two different segments claim {DEVICE_ID} #2" in str(p) for p in problems)


def test_a_segment_that_does_not_link_to_its_predecessor_is_a_fork(chain, sealer, both, tmp_path):
    stranger = sealer.seal(tmp_path, random_records(), sequence=4, prev_hash=b"\x5a" * 32)

    fork = only(check_chains([*chain[:3], link_of(stranger.path, both)]), ChainFork)

    assert "segment 4 of cam-0042 does not link to segment 3" in str(fork)
    assert (b"\x5a" * 8).hex() in str(fork)


def test_an_explained_gap_is_not_reported(chain):
    assert check_chains([chain[0], chain[2], chain[3]], explained={(DEVICE_ID, 2)}) == []


def test_a_gap_explained_only_in_part_is_still_reported(chain):
    gap = only(check_chains([chain[0], chain[3]], explained={(DEVICE_ID, 2)}), ChainGap)

    assert "1 segment(s) missing" in str(gap) and "first 3" in str(gap)


def test_an_explanation_for_another_device_does_not_explain_a_gap(chain):
    only(check_chains([chain[0], chain[2]], explained={(OTHER_DEVICE, 2)}), ChainGap)


def test_the_chains_of_different_devices_are_checked_separately(chain, other_chain):
    assert check_chains([*other_chain, *chain]) == []

    gap = only(check_chains([*chain, other_chain[0], other_chain[2]]), ChainGap)
    assert OTHER_DEVICE in str(gap)


def test_a_first_segment_that_does_not_start_the_chain_is_a_fork(chain):
    forged = dataclasses.replace(chain[0], prev_hash=b"\x01" * 32)

    only(check_chains([forged]), ChainFork)


def test_a_segment_older_than_its_predecessor_is_a_replay(chain):
    problem = check_link(chain[2], chain[1])

    assert isinstance(problem, ChainFork) and "replayed or reordered" in str(problem)


def test_the_summary_counts_each_devices_segments_and_their_range(chain, other_chain):
    assert summarize([*chain[1:], *other_chain]) == {DEVICE_ID: (3, 2, 4), OTHER_DEVICE: (3, 1, 3)}
