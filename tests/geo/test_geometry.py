"""Distances and the boxes the R*Tree is asked for: known values, and boxes that never miss a point."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.server.geoindex import (
    EARTH_RADIUS_M,
    MAX_RADIUS_M,
    bounding_boxes,
    destination,
    haversine_m,
)

ONE_DEGREE_M = math.pi / 180 * EARTH_RADIUS_M  # 111 195.08 m on the mean-radius sphere


def test_one_degree_of_latitude_is_111_195_m():
    assert haversine_m(0, 0, 1, 0) == pytest.approx(ONE_DEGREE_M, abs=0.01)
    assert haversine_m(51, -1, 52, -1) == pytest.approx(ONE_DEGREE_M, abs=0.01)


def test_one_degree_of_longitude_shrinks_with_the_cosine_of_latitude():
    assert haversine_m(0, 10, 0, 11) == pytest.approx(ONE_DEGREE_M, abs=0.01)
    # Along a parallel the great circle is a little shorter than the parallel itself.
    assert haversine_m(60, 0, 60, 1) == pytest.approx(55_597.9, abs=1.0)


def test_antipodes_are_half_the_circumference_apart():
    assert haversine_m(0, 0, 0, 180) == pytest.approx(math.pi * EARTH_RADIUS_M, rel=1e-12)
    assert haversine_m(90, 0, -90, 0) == pytest.approx(math.pi * EARTH_RADIUS_M, rel=1e-12)


def test_london_to_paris_is_about_343_km():
    # Big Ben to the Eiffel Tower: 340-345 km in every published great-circle calculator.
    assert 340_000 < haversine_m(51.5007, -0.1246, 48.8584, 2.2945) < 345_000


def test_the_antimeridian_is_no_wall():
    assert haversine_m(0, 179.999, 0, -179.999) == pytest.approx(0.002 * ONE_DEGREE_M, rel=1e-6)


@given(st.floats(-89, 89), st.floats(-180, 180), st.floats(0, 360), st.floats(0, MAX_RADIUS_M))
def test_destination_is_the_inverse_of_haversine(lat, lon, bearing, d):
    lat2, lon2 = destination(lat, lon, bearing, d)
    assert haversine_m(lat, lon, lat2, lon2) == pytest.approx(d, abs=1e-3)


def _inside(boxes, lat, lon) -> bool:
    return any(b.min_lat <= lat <= b.max_lat and b.min_lon <= lon <= b.max_lon for b in boxes)


@settings(max_examples=300)
@given(st.floats(-89.99, 89.99), st.floats(-180, 179.999999), st.floats(0, 360), st.floats(1, MAX_RADIUS_M))
def test_the_boxes_hold_every_point_of_the_circle(lat, lon, bearing, radius):
    boxes = bounding_boxes(lat, lon, radius)
    assert 1 <= len(boxes) <= 2
    for b in boxes:
        assert -90 <= b.min_lat <= b.max_lat <= 90 and -180 <= b.min_lon <= b.max_lon <= 180
    lat2, lon2 = destination(lat, lon, bearing, radius)
    assert _inside(boxes, lat2, lon2)


def test_a_circle_across_the_antimeridian_is_two_boxes():
    boxes = bounding_boxes(0.0, 179.9999, 1000)
    assert len(boxes) == 2
    assert _inside(boxes, 0.0, -179.995) and _inside(boxes, 0.0, 179.995)


def test_a_circle_over_a_pole_takes_every_longitude():
    (box,) = bounding_boxes(89.9999, 10.0, 1000)
    assert (box.min_lon, box.max_lon, box.max_lat) == (-180.0, 180.0, 90.0)
