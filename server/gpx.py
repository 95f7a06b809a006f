"""A clip's track as GPX 1.1, the format the evidence officer's mapping tools open.

One ``<trk>`` per clip and one ``<trkseg>`` per held segment, in segment
order, so a gap between segments (a segment not yet uploaded, or one whose
track could not be read) shows as a break in the line rather than a straight
jump.  Times are UTC with a Z, from the receiver's GNSS time (``utc_us``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .geoindex import TrackSegment, iso_utc

GPX_NS = "http://www.topografix.com/GPX/1/1"
CREATOR = "OpenBWV evidence server"


def clip_gpx(clip_id: str, segments: list[TrackSegment]) -> bytes:
    """The GPX document (UTF-8, with an XML declaration) for a clip's segments."""
    ET.register_namespace("", GPX_NS)
    q = lambda tag: f"{{{GPX_NS}}}{tag}"  # noqa: E731
    gpx = ET.Element(q("gpx"), {"version": "1.1", "creator": CREATOR})
    meta = ET.SubElement(gpx, q("metadata"))
    ET.SubElement(meta, q("name")).text = f"clip {clip_id}"
    trk = ET.SubElement(gpx, q("trk"))
    ET.SubElement(trk, q("name")).text = f"clip {clip_id}"
    devices = sorted({s.device_id for s in segments})
    ET.SubElement(trk, q("desc")).text = "; ".join(
        [f"device {', '.join(devices)}"]
        + [f"segment #{s.sequence} ({s.segment_hash[:16]}...): {s.status or 'not indexed'}, {len(s.fixes)} fix(es)"
           for s in segments]
    )
    for s in segments:
        seg = ET.SubElement(trk, q("trkseg"))
        for f in s.fixes:
            pt = ET.SubElement(seg, q("trkpt"), {"lat": f"{f.lat:.7f}", "lon": f"{f.lon:.7f}"})
            ET.SubElement(pt, q("time")).text = iso_utc(f.utc_us)
            if f.hdop is not None:
                ET.SubElement(pt, q("hdop")).text = f"{f.hdop:g}"
    return ET.tostring(gpx, encoding="utf-8", xml_declaration=True)


__all__ = ["GPX_NS", "clip_gpx"]
