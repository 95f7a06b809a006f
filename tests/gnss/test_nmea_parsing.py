"""NMEA 0183 to fixes: good sentences give positions, bad ones are counted and skipped, nothing ever raises."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.hw.nmea import (
    Fix,
    NmeaAssembler,
    NmeaCounters,
    NmeaDecoder,
    NmeaParser,
    NoFix,
    nmea_checksum,
    nmea_sentence,
)

DEVICE_US = 1_764_086_400_000_000  # 2025-11-25 16:00:00 UTC on the camera's clock


def utc_us(text: str) -> int:
    moment = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def line(body: str) -> bytes:
    return (nmea_sentence(body) + "\r\n").encode()


RMC = "GNRMC,160000.00,A,5130.04200,N,00007.47600,W,2.722,90.00,251125,,,A"
GGA = "GNGGA,160000.00,5130.04200,N,00007.47600,W,1,09,0.90,12.0,M,45.0,M,,"
GSA = "GNGSA,A,3,02,05,07,09,13,16,20,29,30,,,,1.44,0.90,1.17"
GST = "GNGST,160000.00,2.50,1.94,1.59,0.0,1.768,1.768,3.536"
VTG = "GNVTG,90.00,T,,M,2.722,N,5.040,K,A"


def decode(data: bytes, *, at: int = DEVICE_US) -> tuple[list, NmeaCounters]:
    decoder = NmeaDecoder()
    items = decoder.feed(data, at) + decoder.idle(at)
    return items, decoder.counters


def fixes(items) -> list[Fix]:
    return [i for i in items if isinstance(i, Fix)]


def test_the_checksum_is_the_xor_of_the_characters_between_dollar_and_star():
    # The example every NMEA reference gives.
    assert nmea_checksum("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") == "47"


def test_one_burst_of_rmc_gga_gsa_gst_is_one_fix_with_time_position_quality_and_accuracy():
    items, counters = decode(b"".join(line(s) for s in (RMC, VTG, GGA, GSA, GST)))
    [fix] = fixes(items)
    assert fix.utc_us == utc_us("2025-11-25T16:00:00")
    assert fix.device_utc_us == DEVICE_US
    assert fix.lat == pytest.approx(51 + 30.042 / 60, abs=1e-8)
    assert fix.lon == pytest.approx(-(7.476 / 60), abs=1e-8)  # west is negative
    assert (fix.quality, fix.satellites, fix.hdop, fix.altitude_m) == (1, 9, 0.9, 12.0)
    assert fix.accuracy_m == pytest.approx(2.5, abs=0.01)
    assert fix.speed_mps == pytest.approx(1.4, abs=0.001) and fix.course_deg == 90.0
    assert counters.sentences == 5 and counters.unsupported == 1  # VTG: checked, not used
    assert counters.bad_checksum == counters.truncated == counters.garbage_bytes == counters.malformed == 0


def test_the_record_sealed_for_a_fix_has_both_clocks_and_leaves_out_what_the_receiver_did_not_say():
    items, _ = decode(line(GGA.replace(",0.90,", ",,")))  # no HDOP, no RMC: no speed, no date
    [fix] = fixes(items)
    record = fix.to_record()
    assert record["utc_us"] == fix.utc_us and record["device_utc_us"] == DEVICE_US
    assert {"lat", "lon", "quality", "sats", "alt_m"} <= set(record)
    assert not {"hdop", "speed_mps", "course_deg", "accuracy_m"} & set(record)
    assert fix.clock_offset_us == fix.utc_us - DEVICE_US


def test_the_southern_and_eastern_hemispheres_have_their_signs():
    body = "GPGGA,010203.50,3351.12345,S,15112.54321,E,2,12,0.7,40.0,M,20.0,M,,"
    [fix] = fixes(decode(line(body))[0])
    assert fix.lat == pytest.approx(-(33 + 51.12345 / 60), abs=1e-8)
    assert fix.lon == pytest.approx(151 + 12.54321 / 60, abs=1e-8)
    assert fix.quality == 2  # differential
    assert fix.utc_us % 86_400_000_000 == ((1 * 60 + 2) * 60 + 3) * 1_000_000 + 500_000


def test_a_sentence_with_a_wrong_checksum_is_counted_and_skipped():
    bad = nmea_sentence(GGA)[:-2] + ("00" if not nmea_sentence(GGA).endswith("00") else "01")
    items, counters = decode(bad.encode() + b"\r\n" + line(RMC))
    assert counters.bad_checksum == 1
    [fix] = fixes(items)
    assert fix.satellites is None  # the fix came from the RMC alone


def test_a_flipped_bit_inside_a_sentence_is_a_bad_checksum():
    good = bytearray(line(GGA))
    good[20] ^= 0x02  # a digit of the latitude
    _, counters = decode(bytes(good))
    assert counters.bad_checksum == 1 and counters.fixes == 0


def test_lines_cut_short_are_counted_as_truncated():
    whole = line(GGA)
    cut_then_restart = whole[:30] + line(RMC)  # the receiver reset mid-sentence
    no_checksum = b"$" + GGA.encode() + b"\r\n"
    cut_inside_checksum = whole[:-3] + b"\r\n"  # "*4" and the line ends
    items, counters = decode(cut_then_restart + no_checksum + cut_inside_checksum)
    assert counters.truncated == 3
    assert len(fixes(items)) == 1  # the RMC between them


def test_garbage_between_sentences_is_counted_and_the_fixes_survive_it():
    noise = b"\x00\xff\xfe junk \x07\x1b[0m"
    items, counters = decode(noise + line(RMC) + noise + line(GGA) + noise)
    assert len(fixes(items)) == 1
    assert counters.garbage_bytes == 3 * len(noise)


def test_a_control_byte_inside_a_sentence_drops_that_sentence_as_garbage():
    broken = line(GGA)[:25] + b"\x00" + line(GGA)[25:]
    items, counters = decode(broken)
    assert not fixes(items)
    assert counters.garbage_bytes > 0 and counters.sentences == 0


def test_a_line_longer_than_any_sentence_is_dropped_without_growing():
    items, counters = decode(b"$GPGGA," + b"1" * 10_000 + b"\r\n" + line(GGA))
    assert counters.truncated == 1 and len(fixes(items)) == 1


@pytest.mark.parametrize("body", [
    "GNGGA,160000.00,5130.04200,N,00007.47600,W,x,09,0.90,12.0,M,45.0,M,,",  # quality not a number
    "GNGGA,160000.00,5199.00000,N,00007.47600,W,1,09,0.90,12.0,M,45.0,M,,",  # 99 minutes
    "GNGGA,160000.00,9130.04200,N,00007.47600,W,1,09,0.90,12.0,M,45.0,M,,",  # latitude 91
    "GNGGA,250000.00,5130.04200,N,00007.47600,W,1,09,0.90,12.0,M,45.0,M,,",  # hour 25
    "GNGGA,160000.00,5130.04200,N,00007.47600,W,1,09,nan,12.0,M,45.0,M,,",  # HDOP not finite
    "GNRMC,160000.00,A,5130.04200,N,00007.47600,W,2.722,90.00,321325,,,A",  # no such date
    "GNRMC,160000.00,Q,5130.04200,N,00007.47600,W,2.722,90.00,251125,,,A",  # status neither A nor V
])
def test_fields_that_are_not_what_their_type_says_are_counted_as_malformed(body):
    items, counters = decode(line(body))
    assert counters.malformed == 1 and not fixes(items)


def test_unsupported_and_proprietary_sentences_are_counted_not_parsed():
    _, counters = decode(line("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00")
                         + line("PUBX,00,160000.00,5130.04200,N") + line("GPTXT,01,01,02,ANTSTATUS=OK"))
    assert counters.sentences == 3 and counters.unsupported == 3 and counters.fixes == 0


def test_an_epoch_without_a_fix_is_a_no_fix_with_the_receivers_time():
    parser = NmeaParser()
    epochs = parser.sentence("GNRMC,160001.00,V,,,,,,,251125,,,N", DEVICE_US)
    epochs += parser.sentence("GNGGA,160001.00,,,,,0,00,99.99,,,,,,", DEVICE_US)
    epochs += parser.end_of_burst()
    assert epochs == [NoFix(DEVICE_US, utc_us("2025-11-25T16:00:01"))]


def test_gga_quality_zero_with_a_stale_position_is_no_fix():
    stale = GGA.replace(",1,09,", ",0,09,")
    items, counters = decode(line(stale))
    assert not fixes(items) and counters.no_fix_epochs == 1


def at(second: int, *bodies: str) -> bytes:
    return b"".join(line(b.replace("160000.00", f"1600{second:02d}.00")) for b in bodies)


def test_the_first_epoch_is_complete_when_the_next_time_begins_even_without_a_pause():
    decoder = NmeaDecoder()
    items = decoder.feed(at(0, RMC, GGA) + at(1, RMC), DEVICE_US)
    assert [f.utc_us for f in fixes(items)] == [utc_us("2025-11-25T16:00:00")]


def test_once_the_receivers_epoch_is_known_a_fix_is_complete_with_its_last_sentence():
    decoder = NmeaDecoder()
    decoder.feed(at(0, RMC, GGA, GST), DEVICE_US)
    decoder.idle(DEVICE_US)  # learnt: RMC, GGA and GST make an epoch
    assert not fixes(decoder.feed(at(1, RMC, GGA), DEVICE_US))
    [fix] = fixes(decoder.feed(at(1, GST), DEVICE_US))  # no pause needed
    assert fix.utc_us == utc_us("2025-11-25T16:00:01") and fix.accuracy_m is not None


def test_an_epoch_without_a_fix_does_not_teach_the_parser_to_stop_waiting_for_the_error_estimate():
    no_fix = [RMC.replace(",A,", ",V,"), GGA.replace(",1,09,", ",0,00,")]
    decoder = NmeaDecoder()
    items = []
    for data in (at(0, RMC, GGA, GST), at(1, *no_fix), at(2, RMC, GGA, GST)):
        items += decoder.feed(data, DEVICE_US) + decoder.idle(DEVICE_US)
    assert [f.accuracy_m for f in fixes(items)] == [pytest.approx(2.5, abs=0.01)] * 2
    assert decoder.counters.late == 0 and decoder.counters.no_fix_epochs == 1


def test_a_sentence_for_an_epoch_already_complete_is_dropped_as_late():
    decoder = NmeaDecoder()
    decoder.feed(line(RMC) + line(GGA), DEVICE_US)
    decoder.idle(DEVICE_US)
    items = decoder.feed(line(GST), DEVICE_US) + decoder.idle(DEVICE_US)
    assert not items and decoder.counters.late == 1


def test_the_sentences_of_an_epoch_may_come_in_any_order():
    items, _ = decode(b"".join(line(s) for s in (GSA, GST, GGA, RMC)))
    [fix] = fixes(items)
    assert fix.hdop == 0.9 and fix.accuracy_m == pytest.approx(2.5, abs=0.01) and fix.speed_mps is not None


def test_a_receiver_that_sends_no_date_gets_the_nearest_date_of_the_device_clock():
    just_after_midnight = "GPGGA,000001.00,5130.04200,N,00007.47600,W,1,09,0.90,12.0,M,45.0,M,,"
    device = utc_us("2025-11-25T23:59:58")  # the camera's clock is 3 s behind, before midnight
    [fix] = fixes(decode(line(just_after_midnight), at=device)[0])
    assert fix.utc_us == utc_us("2025-11-26T00:00:01")


def test_the_date_rolls_over_at_midnight_between_two_rmc_dates():
    before = RMC.replace("160000.00", "235959.00")
    after = GGA.replace("160000.00", "000000.00")  # GGA carries no date
    decoder = NmeaDecoder()
    items = decoder.feed(line(before), DEVICE_US) + decoder.idle(DEVICE_US)
    items += decoder.feed(line(after), DEVICE_US) + decoder.idle(DEVICE_US)
    assert [f.utc_us for f in fixes(items)] == [utc_us("2025-11-25T23:59:59"), utc_us("2025-11-26T00:00:00")]


def test_a_stream_cut_into_pieces_anywhere_decodes_the_same():
    data = b"".join(line(s.replace("160000", f"1600{n:02d}")) for n in range(5) for s in (RMC, GGA, GSA))
    whole, _ = decode(data)
    decoder = NmeaDecoder()
    pieces = []
    for i in range(0, len(data), 7):
        pieces += decoder.feed(data[i:i + 7], DEVICE_US)
    pieces += decoder.idle(DEVICE_US)
    assert pieces == whole and len(fixes(whole)) == 5


# -- never raises ------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_never_raise_they_are_only_counted(chunks):
    decoder = NmeaDecoder()
    for chunk in chunks:
        decoder.feed(chunk, DEVICE_US)
        decoder.idle(DEVICE_US)
    c = decoder.counters
    assert c.bytes == sum(map(len, chunks))


_FIELD = st.text(alphabet="0123456789.,-+ENSWAVMKTnaie", max_size=14)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["GPGGA", "GNRMC", "GNGSA", "GPGST", "GPZDA", "PUBX", "GPGSV", "XXGGA"]),
       st.lists(_FIELD, max_size=16), st.binary(max_size=40))
def test_sentences_with_good_checksums_and_random_fields_never_raise(kind, fields, noise):
    """Past the checksum, pynmea2 and our field checks meet hostile text: still only counted."""
    data = (nmea_sentence(",".join([kind, *fields])) + "\r\n").encode() + noise + line(GGA)
    decoder = NmeaDecoder()
    items = decoder.feed(data, DEVICE_US) + decoder.idle(DEVICE_US)
    assert all(isinstance(i, Fix) or hasattr(i, "kind") for i in items)
    for fix in fixes(items):
        assert -90 <= fix.lat <= 90 and -180 <= fix.lon <= 180


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_the_assembler_accounts_for_every_sentence_it_starts(data):
    c = NmeaCounters()
    out = NmeaAssembler(c).feed(data)
    assert len(out) == c.sentences
    assert all(s.isascii() and "*" not in s for s in out)
