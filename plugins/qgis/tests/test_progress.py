"""The CLI's machine-readable stderr lines, parsed (no QGIS application needed)."""
from geoalps_processing.progress import (Progress, TileCounts, is_error_line, parse_progress, parse_tile_counts,
                                         split_records)


def test_progress_line_is_parsed():
    assert parse_progress("geoalps-progress: 42.5 tile 3/8 scene.tif s0_r1_c0: 12 objects") == (
        Progress(42.5, "tile 3/8 scene.tif s0_r1_c0: 12 objects")
    )


def test_progress_without_message_and_integer_percent():
    assert parse_progress("geoalps-progress: 7") == Progress(7.0, "")


def test_progress_is_clamped():
    assert parse_progress("geoalps-progress: 130 x").percent == 100.0
    assert parse_progress("geoalps-progress: -3 x").percent == 0.0


def test_other_lines_are_not_progress():
    assert parse_progress("geoalps: engine classical") is None
    assert parse_progress("geoalps-progress: soon") is None
    assert parse_progress("INFO geoalps-progress: 5 x") is None


def test_error_line():
    assert is_error_line("geoalps: error: scene.tif: not a raster\n")
    assert not is_error_line("warning: geoalps: error: quoted")


def test_split_records_keeps_the_last_redraw_and_splits_glued_records():
    raw = b"labelling:  50%|#####| 1/2\rlabelling: 100%|##| 2/2geoalps-progress: 99 done\n"
    assert split_records(raw) == ["labelling: 100%|##| 2/2", "geoalps-progress: 99 done"]
    assert split_records(b"plain line\r\n") == ["plain line"]
    assert split_records(b"\r\n") == []
    assert split_records("caf\u00e9 \u2713\n".encode()) == ["caf\u00e9 \u2713"]


def test_label_summary_gives_the_tiles_resumed():
    line = ("geoalps: wrote /tmp/a (1).gpkg: 1001 polygons, 4 pseudo-classes, 9 tiles (2 all nodata, 3 resumed) "
            "in 4.4 s")
    assert parse_tile_counts(line) == TileCounts(tiles=9, resumed=3)
    assert parse_tile_counts("geoalps: engine classical, resuming: 3 of 9 tiles already done") is None
    assert parse_tile_counts("a log line quoting 9 tiles (0 all nodata, 3 resumed)") is None
