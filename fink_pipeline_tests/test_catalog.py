"""The user catalogue of a cross-match (fink_pipeline.transfer.crossmatch.catalog): CSV and Parquet files
read into ra, dec, radius_arcsec and id; every bad catalogue refused with one line naming the
file, the column, the data row and the fix. Plain pytest, no Spark."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fink_pipeline.transfer.crossmatch import catalog as catalog_module
from fink_pipeline.transfer.crossmatch.catalog import (
    MAX_CATALOG_ROWS,
    MAX_RADIUS_ARCSEC,
    Catalog,
    CatalogError,
    file_sha256,
    read_catalog,
)
from fink_pipeline.transfer.request import RequestError

COLUMNS = ["ra", "dec", "radius_arcsec", "id"]


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def refused(path, fragment: str, **kwargs) -> str:
    """read_catalog raises CatalogError: one line starting with the file name, with `fragment`."""
    kwargs.setdefault("radius_arcsec", 1.5)
    with pytest.raises(CatalogError) as raised:
        read_catalog(path, **kwargs)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"{path.name}: "), message
    assert fragment in message, message
    return message


# --------------------------------------------------------------------------------------------
# happy paths


def test_csv_decimal_degrees_string_ids(tmp_path):
    path = write(tmp_path, "sources.csv", "ra,dec,name,mag\n10.5,-3.25,M31,12\n200,45,NGC 224,13\n0,-90,a,\n")
    catalog = read_catalog(path, id_col="name", radius_arcsec=1.5)
    assert isinstance(catalog, Catalog) and issubclass(CatalogError, RequestError)
    assert catalog.table.column_names == COLUMNS
    assert catalog.table.schema.types == [pa.float64(), pa.float64(), pa.float64(), pa.string()]
    assert catalog.table.to_pydict() == {"ra": [10.5, 200.0, 0.0], "dec": [-3.25, 45.0, -90.0],
                                         "radius_arcsec": [1.5] * 3, "id": ["M31", "NGC 224", "a"]}
    assert catalog.num_rows == 3
    assert catalog.path == str(path) and catalog.id_col == "name"
    assert catalog.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_csv_layout_tolerated(tmp_path):
    """BOM, spaces around names and values, blank lines, quoted fields, CRLF, an unnamed pandas index."""
    text = ', ra , dec ,id\r\n0, 1.5 ,"2", x \r\n\r\n1,3 ,  -4,"y, z"\r\n'
    catalog = read_catalog(write(tmp_path, "c.csv", text), radius_arcsec=2)
    assert catalog.table.to_pydict() == {"ra": [1.5, 3.0], "dec": [2.0, -4.0], "radius_arcsec": [2.0, 2.0],
                                         "id": ["x", "y, z"]}
    bom = write(tmp_path, "bom.csv", "\ufeffra,dec,id\n1,2, 3\n")  # Excel's UTF-8 CSV
    assert read_catalog(bom, radius_arcsec=1).table.to_pydict() == {"ra": [1.0], "dec": [2.0],
                                                                    "radius_arcsec": [1.0], "id": [3]}


def test_tsv_and_gzip(tmp_path):
    tsv = write(tmp_path, "c.tsv", "ra\tdec\tid\n1\t2\t3\n")
    assert read_catalog(tsv, radius_arcsec=1).table["id"].to_pylist() == [3]
    data = gzip.compress(b"ra,dec,id\n1,2,a\n4,5,b\n")
    gz = write(tmp_path, "c.csv.gz", data)
    catalog = read_catalog(gz, radius_arcsec=1)
    assert catalog.table["dec"].to_pylist() == [2.0, 5.0]
    assert catalog.sha256 == hashlib.sha256(data).hexdigest()  # the file as stored


def test_parquet_int_ids_kept_without_copy(tmp_path):
    ra = pa.chunked_array([[0.0, 359.5], [12.25]])
    table = pa.table({"RAJ2000": ra, "DEJ2000": [-1.0, 2.0, 89.5], "objid": pa.array([7, 8, 9], pa.int64()),
                      "other": ["x", "y", "z"]})
    path = tmp_path / "sources.parquet"
    pq.write_table(table, path)
    catalog = read_catalog(path, ra_col="RAJ2000", dec_col="DEJ2000", id_col="objid", radius_arcsec=3)
    assert catalog.table.to_pydict() == {"ra": [0.0, 359.5, 12.25], "dec": [-1.0, 2.0, 89.5],
                                         "radius_arcsec": [3.0] * 3, "id": [7, 8, 9]}
    assert catalog.table.schema.types == [pa.float64(), pa.float64(), pa.float64(), pa.int64()]
    assert catalog.sha256 == file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_parquet_columns_as_read_are_not_copied(tmp_path, monkeypatch):
    """float64 coordinates and int64/string ids are the arrays pyarrow read."""
    path = tmp_path / "c.parquet"
    table = pa.table({"ra": [1.0, 2.0, 3.0], "dec": [3.0, 4.0, 5.0], "id": [5, 6, 7], "name": ["a", "b", "c"]})
    pq.write_table(table, path, row_group_size=2)
    read = []
    original = pq.ParquetFile.read

    def spy(self, *args, **kwargs):
        read.append(original(self, *args, **kwargs))
        return read[-1]

    monkeypatch.setattr(pq.ParquetFile, "read", spy)
    for id_col in ("id", "name"):
        catalog = read_catalog(path, id_col=id_col, radius_arcsec=1)
        for ours, theirs in (("ra", "ra"), ("dec", "dec"), ("id", id_col)):
            assert [c.buffers()[1].address for c in catalog.table[ours].chunks] == \
                [c.buffers()[1].address for c in read[-1][theirs].chunks]


def test_parquet_types_converted(tmp_path):
    """float32/int/decimal coordinates -> float64; int32/uint ids -> int64; large and dictionary strings -> string."""
    path = tmp_path / "c.pq"
    pq.write_table(pa.table({
        "ra": pa.array([10.5, 20.25], pa.float32()), "dec": pa.array([-5, 7], pa.int16()),
        "r": pa.array([1, 2], pa.decimal128(5, 1)), "i": pa.array([1, 2], pa.int32()),
        "u": pa.array([3, 4], pa.uint64()), "s": pa.array(["a", "b"], pa.large_string()),
        "d": pa.array(["x", "y"]).dictionary_encode(),
    }), path)
    catalog = read_catalog(path, id_col="i", radius_col="r")
    assert catalog.table.to_pydict() == {"ra": [10.5, 20.25], "dec": [-5.0, 7.0], "radius_arcsec": [1.0, 2.0],
                                         "id": [1, 2]}
    assert catalog.table.schema.types == [pa.float64()] * 3 + [pa.int64()]
    assert read_catalog(path, id_col="u", radius_arcsec=1).table["id"].type == pa.int64()
    for id_col, ids in (("s", ["a", "b"]), ("d", ["x", "y"])):
        table = read_catalog(path, id_col=id_col, radius_arcsec=1).table
        assert table["id"].type == pa.string() and table["id"].to_pylist() == ids


def test_format_sniffed_without_extension(tmp_path):
    parquet = tmp_path / "catalogue.dat"
    pq.write_table(pa.table({"ra": [1.0], "dec": [2.0], "id": ["a"]}), parquet)
    assert read_catalog(parquet, radius_arcsec=1).table["id"].to_pylist() == ["a"]
    text = write(tmp_path, "catalogue.txt", "ra,dec,id\n1,2,a\n")
    assert read_catalog(text, radius_arcsec=1).table["ra"].to_pylist() == [1.0]


def test_ra_360_is_0(tmp_path):
    path = write(tmp_path, "c.csv", "ra,dec,id\n360,0,1\n359.999,0,2\n24:00:00,0,3\n360.0,0,4\n")
    assert read_catalog(path, radius_arcsec=1).table["ra"].to_pylist() == [0.0, 359.999, 0.0, 0.0]
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"ra": [360.0, 1.0], "dec": [0.0, 0.0], "id": [1, 2]}), parquet)
    assert read_catalog(parquet, radius_arcsec=1).table["ra"].to_pylist() == [0.0, 1.0]


def test_per_row_radius(tmp_path):
    path = write(tmp_path, "c.csv", "ra,dec,id,r\n1,2,a,0.5\n3,4,b, 3600 \n5,6,c,1e1\n")
    catalog = read_catalog(path, radius_col="r")
    assert catalog.table["radius_arcsec"].to_pylist() == [0.5, 3600.0, 10.0]
    assert catalog.table.column_names == COLUMNS


def test_csv_id_typing(tmp_path):
    def ids(values):
        text = "ra,dec,id\n" + "".join(f"1,2,{v}\n" for v in values)
        return read_catalog(write(tmp_path, "ids.csv", text), radius_arcsec=1).table["id"]

    assert ids(["1", "-2", "0", "9223372036854775807"]).type == pa.int64()
    assert ids(["1", "-2", "0"]).to_pylist() == [1, -2, 0]
    for texts in (["1", "00123"], ["+5", "6"], ["1", "1.0"], ["1", "9223372036854775808"], ["-0", "1"], ["1", "x"]):
        column = ids(texts)
        assert column.type == pa.string() and column.to_pylist() == texts, texts


def hms(rng: random.Random, hours: bool) -> tuple[str, str]:
    """A random sexagesimal value in one of the accepted forms, and the same for astropy."""
    whole = rng.randrange(24) if hours else rng.randrange(-89, 90)
    minutes, millis = rng.randrange(60), rng.randrange(60000)
    sign = "-" if whole < 0 or (whole == 0 and not hours and rng.random() < 0.5) else rng.choice(["", "+"])
    d, s = abs(whole), f"{millis / 1000:.{rng.choice([0, 1, 3])}f}".rstrip(".")
    if float(s) >= 60:
        s = "59.5"
    unit, minute, second = ("h", "m", "s") if hours else (rng.choice(["d", "°"]), rng.choice(["m", "'"]), '"')
    form = rng.choice(["{}{:02d}:{:02d}:{}", "{}{} {} {}", "{}{}" + unit + "{}" + minute + "{}" + second])
    text = form.format(sign, d, minutes, s)
    return text, f"{sign}{d}:{minutes}:{s}"


def test_sexagesimal_matches_astropy(tmp_path):
    from astropy import units as u
    from astropy.coordinates import Angle

    rng = random.Random(16)
    ras, decs = zip(*((hms(rng, True), hms(rng, False)) for _ in range(400)))
    rows = "".join(f"{ra[0]}\t{dec[0]}\t{i}\n" for i, (ra, dec) in enumerate(zip(ras, decs)))
    path = write(tmp_path, "c.tsv", "ra\tdec\tid\n" + rows)  # no quoting of the Dec's '"' seconds
    table = read_catalog(path, radius_arcsec=1).table
    expected_ra = Angle([r[1] for r in ras], unit=u.hourangle).deg
    expected_dec = Angle([d[1] for d in decs], unit=u.deg).deg
    assert np.abs(table["ra"].to_numpy() - expected_ra).max() < 1e-9
    assert np.abs(table["dec"].to_numpy() - expected_dec).max() < 1e-9
    assert sum(d[0].startswith("-0") for d in decs) > 0  # the sign of 0 degrees was exercised
    # the texts as written (letters, spaces, signs) through astropy's own parser too
    for i in range(0, 400, 7):
        assert abs(Angle(ras[i][0], unit=u.hourangle).deg - table["ra"][i].as_py()) < 1e-9
        assert abs(Angle(decs[i][0], unit=u.deg).deg - table["dec"][i].as_py()) < 1e-9


def test_sexagesimal_forms_and_mixed_column(tmp_path):
    text = ("ra\tdec\tid\n12:34:56.7\t+12:34:56.7\ta\n12 34 56.7\t-00:30:00\tb\n12h34m56.7s\t12d34m56.7s\tc\n"
            "188.73625\t-12  34 56\td\n 1H2M3S \t-0d30m0s\te\n")
    table = read_catalog(write(tmp_path, "c.tsv", text), radius_arcsec=1).table
    ra, dec = table["ra"].to_pylist(), table["dec"].to_pylist()
    assert ra[:4] == pytest.approx([188.73625] * 4, abs=1e-12)
    assert ra[4] == pytest.approx(15.5125, abs=1e-12)
    assert dec == pytest.approx([12.58241666666, -0.5, 12.58241666666, -12.58222222222, -0.5], abs=1e-9)


def test_file_sha256_streams(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 MiB, not a multiple of the chunk
    path = write(tmp_path, "big.bin", data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_limits():
    assert MAX_CATALOG_ROWS == 10_000_000 and MAX_RADIUS_ARCSEC == 3600.0


# --------------------------------------------------------------------------------------------
# the file


def test_missing_file(tmp_path):
    refused(tmp_path / "nowhere.csv", "nowhere.csv: no such file")


def test_directory(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    refused(tmp_path / "dir.csv", "is a directory, not a catalogue file")


def test_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")  # reading it would block
    refused(tmp_path / "pipe.csv", "pipe.csv: is not a regular file")


def test_empty_parquet_file(tmp_path):
    refused(write(tmp_path, "empty.parquet", b""), "empty.parquet: the file is empty")


def test_unreadable(tmp_path, monkeypatch):
    path = write(tmp_path, "locked.csv", "ra,dec,id\n1,2,3\n")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(catalog_module, "open", denied, raising=False)
    refused(path, "locked.csv: cannot be read (Permission denied)")


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("blob.bin", b"\x00\x01\x02binary\x00" * 10, "not a CSV or Parquet file (binary content)"),
    ("sheet.csv", b"PK\x03\x04" + b"\x00" * 30, "a ZIP archive (an Excel workbook?): export the sheet as CSV"),
    ("image.fits", b"SIMPLE  =                    T" + b" " * 50, "a FITS file: convert it to CSV or Parquet"),
    ("cat.parquet", b"ra,dec,id\n1,2,3\n", "not a readable Parquet file"),
    ("truncated.parquet", b"PAR1\x00\x00", "not a readable Parquet file"),
    ("broken.csv.gz", b"\x1f\x8b\x08\x00garbage", "not a valid gzip file"),
])
def test_not_a_catalogue(tmp_path, name, content, fragment):
    refused(write(tmp_path, name, content), fragment)


def test_parquet_named_csv(tmp_path):
    path = tmp_path / "cat.csv"
    pq.write_table(pa.table({"ra": [1.0]}), path)
    refused(path, "not a CSV file but a Parquet file: name it with the .parquet extension")


def test_not_utf8(tmp_path):
    path = write(tmp_path, "latin1.csv", "ra,dec,id\n1,2,a\n3,4,Bo\xf6tes\n".encode("latin-1"))
    refused(path, "latin1.csv: not UTF-8 text (byte 0xf6 on line 3); save the file as UTF-8 CSV")


@pytest.mark.parametrize(("text", "fragment"), [
    ("ra,dec,id\n1,2,a\n\n3,4\n", "malformed CSV, row 2: 2 fields where the header has 3 ('3,4')"),
    ("ra,dec,id\n1,2,a\n3,4,b\n5,6,c,d\n", "malformed CSV, row 3: 4 fields where the header has 3"),
])
def test_ragged_rows(tmp_path, text, fragment):
    refused(write(tmp_path, "ragged.csv", text), fragment)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", gzip.compress(b"")])
def test_empty_file(tmp_path, content):
    refused(write(tmp_path, "empty.csv" if content[:1] != b"\x1f" else "empty.csv.gz", content),
            "the file is empty")


def test_header_only(tmp_path):
    refused(write(tmp_path, "header.csv", "ra,dec,id\n"), "header.csv: no rows, only the columns (ra, dec, id)")
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"ra": pa.array([], pa.float64()), "dec": pa.array([], pa.float64()),
                             "id": pa.array([], pa.int64())}), path)
    refused(path, "empty.parquet: no rows, only the columns (ra, dec, id)")


def test_too_many_rows_csv(tmp_path):
    path = write(tmp_path, "big.csv", "ra,dec,id\n" + "".join(f"1,2,{i}\n" for i in range(11)))
    refused(path, "big.csv: 11 rows, more than the limit of 10; split the catalogue", max_rows=10)
    assert read_catalog(path, radius_arcsec=1, max_rows=11).num_rows == 11


def test_too_many_rows_parquet_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"ra": [1.0] * 11, "dec": [2.0] * 11, "id": list(range(11))}), path)

    def no_read(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(pq.ParquetFile, "read", no_read)
    refused(path, "big.parquet: 11 rows, more than the limit of 10", max_rows=10)


# --------------------------------------------------------------------------------------------
# columns and arguments


def test_missing_column_did_you_mean(tmp_path):
    path = write(tmp_path, "sources.csv", "ra,dec,name\n1,2,a\n")
    message = refused(path, "", ra_col="RA", id_col="name")
    assert message == ("sources.csv: no column 'RA' (columns: ra, dec, name); did you mean 'ra'? "
                       "Give the right one with --ra-col")


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"dec_col": "declination"}, "no column 'declination' (columns: ra, dec, name); give the right one with --dec-col"),
    ({"id_col": "nam"},
     "no column 'nam' (columns: ra, dec, name); did you mean 'name'? Give the right one with --id-col"),
    ({"id_col": "name", "radius_col": "radius", "radius_arcsec": None}, "no column 'radius'"),
])
def test_missing_column(tmp_path, kwargs, fragment):
    refused(write(tmp_path, "sources.csv", "ra,dec,name\n1,2,a\n"), fragment, **kwargs)


def test_missing_column_parquet_and_separator_hint(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"ra": [1.0], "Dec": [2.0], "id": [1]}), path)
    refused(path, "no column 'dec' (columns: ra, Dec, id); did you mean 'Dec'? Give the right one with --dec-col")
    refused(write(tmp_path, "semi.csv", "ra;dec;id\n1;2;3\n"), "is the file separated by ';' rather than ','?")


def test_duplicate_header_column(tmp_path):
    refused(write(tmp_path, "twice.csv", "ra,dec,id,ra\n1,2,3,4\n"), "twice.csv: column 'ra' appears 2 times")


def test_same_column_twice(tmp_path):
    path = write(tmp_path, "c.csv", "ra,dec,id\n1,2,3\n")
    refused(path, "--ra-col and --dec-col both name column 'ra'", dec_col="ra")


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"radius_arcsec": None}, "c.csv: give the match radius: --radius-arcsec R or --radius-col C"),
    ({"radius_arcsec": 2.0, "radius_col": "r"}, "give one match radius, not both"),
    ({"radius_arcsec": 0}, "--radius-arcsec: radius 0.0 must be > 0 arcsec"),
    ({"radius_arcsec": -1.5}, "--radius-arcsec: radius -1.5 must be > 0 arcsec"),
    ({"radius_arcsec": float("nan")}, "--radius-arcsec: radius nan is not a number"),
    ({"radius_arcsec": 3600.5}, "radius 3600.5 is above the limit of 3600 arcsec (1 degree)"),
    ({"radius_arcsec": True}, "--radius-arcsec must be a number of arcseconds, got True"),
    ({"radius_arcsec": "2"}, "--radius-arcsec must be a number of arcseconds, got '2'"),
])
def test_radius_arguments(tmp_path, kwargs, fragment):
    refused(write(tmp_path, "c.csv", "ra,dec,id,r\n1,2,3,1\n"), fragment, **kwargs)


# --------------------------------------------------------------------------------------------
# values


def catalogue(tmp_path, bad_column: str, bad_value: str, name: str = "c.csv"):
    """Four good rows, the third with `bad_value` in `bad_column`."""
    rows = [{"ra": "10", "dec": "20", "id": f"s{i}", "r": "1.5"} for i in range(4)]
    rows[2][bad_column] = bad_value
    return write(tmp_path, name, "ra,dec,id,r\n" + "".join(",".join(r.values()) + "\n" for r in rows))


@pytest.mark.parametrize(("column", "value", "fragment"), [
    ("ra", "", "column 'ra', row 3: empty value; every source needs an RA and a Dec"),
    ("dec", "  ", "column 'dec', row 3: empty value"),
    ("ra", "NaN", "column 'ra', row 3: 'NaN' is not a number"),
    ("dec", "inf", "column 'dec', row 3: 'inf' is infinite"),
    ("ra", "ten", "column 'ra', row 3: cannot read 'ten' as RA; give decimal degrees or sexagesimal hours"),
    ("dec", "12:34", "column 'dec', row 3: cannot read '12:34' as Dec; give decimal degrees or sexagesimal degrees"),
    ("ra", "12d30m00s", "column 'ra', row 3: cannot read '12d30m00s' as RA"),
    ("ra", "-10.5", "column 'ra', row 3: '-10.5' is negative; RA is in degrees from 0 to 360: add 360 "
                    "(-10.5 + 360 = 349.5)"),
    ("ra", "-00:30:00", "column 'ra', row 3: '-00:30:00' (-7.5 degrees) is negative"),
    ("ra", "360.5", "column 'ra', row 3: '360.5' is above 360"),
    ("ra", "25:00:00", "column 'ra', row 3: '25:00:00' (375 degrees) is above 360"),
    ("dec", "90.01", "column 'dec', row 3: '90.01' is outside [-90, 90]"),
    ("dec", "-91:00:00", "column 'dec', row 3: '-91:00:00' (-91 degrees) is outside [-90, 90]"),
    ("dec", "+12:60:00", "column 'dec', row 3: minutes of '+12:60:00' must be below 60"),
    ("ra", "12h34m61s", "column 'ra', row 3: seconds of '12h34m61s' must be below 60"),
    ("r", "0", "column 'r', row 3: radius '0' must be > 0 arcsec"),
    ("r", "-2", "column 'r', row 3: radius '-2' must be > 0 arcsec"),
    ("r", "nan", "column 'r', row 3: radius 'nan' is not a number"),
    ("r", "", "column 'r', row 3: empty radius"),
    ("r", "1.5 arcsec", "column 'r', row 3: cannot read '1.5 arcsec' as a radius in arcseconds"),
    ("r", "3601", "column 'r', row 3: radius '3601' is above the limit of 3600 arcsec (1 degree)"),
    ("id", "", "column 'id', row 3: empty id; every source needs a unique id"),
])
def test_bad_value(tmp_path, column, value, fragment):
    radius = {"radius_col": "r", "radius_arcsec": None} if column == "r" else {}
    refused(catalogue(tmp_path, column, value), f"c.csv: {fragment}", **radius)


def test_long_value_shortened(tmp_path):
    message = refused(catalogue(tmp_path, "ra", "x" * 100_000), "column 'ra', row 3: cannot read 'xxxx")
    assert "x" * 41 not in message


def test_first_bad_row_reported(tmp_path):
    path = write(tmp_path, "c.csv", "ra,dec,id\n1,2,a\n1,95,b\n1,-95,c\n")
    refused(path, "column 'dec', row 2: '95' is outside")


def test_duplicate_ids(tmp_path):
    ids = [f"s{i}" for i in range(20)]
    ids[2], ids[16], ids[18] = "M31", "M31", "M31"
    ids[17] = "s5"
    path = write(tmp_path, "sources.csv", "ra,dec,name\n" + "".join(f"1,2,{i}\n" for i in ids))
    refused(path, "sources.csv: id 'M31' appears on rows 3 and 17; ids must be unique (column 'name')",
            id_col="name")
    numbers = write(tmp_path, "numbers.csv", "ra,dec,id\n1,2,10\n1,2,11\n1,2,10\n")
    refused(numbers, "numbers.csv: id 10 appears on rows 1 and 3; ids must be unique")


def test_duplicate_ids_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"ra": [1.0] * 5, "dec": [2.0] * 5, "id": ["a", "b", "c", "b", "a"]}), path)
    refused(path, "d.parquet: id 'b' appears on rows 2 and 4; ids must be unique")


@pytest.mark.parametrize("data_type", [pa.float64(), pa.float32(), pa.decimal128(10, 0), pa.bool_()])
def test_parquet_id_type_refused(tmp_path, data_type):
    path = tmp_path / "float_ids.parquet"
    ids = pa.array([True, False] if data_type == pa.bool_() else [1, 2], data_type)
    pq.write_table(pa.table({"ra": [1.0, 2.0], "dec": [2.0, 3.0], "id": ids}), path)
    refused(path, f"column 'id' has type {data_type}; ids must be integers or text")


@pytest.mark.parametrize(("columns", "kwargs", "fragment"), [
    ({"ra": [1.0, None, 2.0]}, {}, "column 'ra', row 2: empty value"),
    ({"dec": [0.0, 1.0, float("nan")]}, {}, "column 'dec', row 3: nan is not a number"),
    ({"ra": [1.0, -1.0, 2.0]}, {}, "column 'ra', row 2: -1.0 is negative; RA is in degrees from 0 to 360: add 360"),
    ({"dec": [0.0, float("-inf"), 0.0]}, {}, "column 'dec', row 2: -inf is infinite"),
    ({"id": pa.array([1, 2, None], pa.int64())}, {}, "column 'id', row 3: empty id"),
    ({"id": ["a", "", "c"]}, {}, "column 'id', row 2: empty id"),
    ({"id": pa.array([1, 2, 2**64 - 1], pa.uint64())}, {},
     "column 'id', row 3: id 18446744073709551615 is beyond int64"),
    ({"r": [1.0, 2.0, 0.0]}, {"radius_col": "r", "radius_arcsec": None}, "column 'r', row 3: radius 0.0 must be > 0"),
    ({"ra": pa.array([1, 2, 3], pa.timestamp("s"))}, {}, "column 'ra' has type timestamp[ms]; coordinates must be"),
    ({"r": [True, False, True]}, {"radius_col": "r", "radius_arcsec": None},
     "column 'r' has type bool; a radius in arcseconds must be numbers or text"),
    ({"ra": ["10", "1h2m3s", "1:2"]}, {}, "column 'ra', row 3: cannot read '1:2' as RA"),
])
def test_parquet_bad_values(tmp_path, columns, kwargs, fragment):
    table = {"ra": [1.0, 2.0, 3.0], "dec": [0.0, 1.0, 2.0], "id": [1, 2, 3], "r": [1.0, 1.0, 1.0]}
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({**table, **columns}), path)
    refused(path, f"p.parquet: {fragment}", **kwargs)


# --------------------------------------------------------------------------------------------
# the bad-input corpus (bad_inputs/catalog_*.yaml, checked through requests by test_bad_inputs)

CORPUS = Path(__file__).parent / "bad_inputs"
CATALOG_KEYS = {"ra_col", "dec_col", "id_col", "radius_arcsec", "radius_col"}


def corpus_header(request_file: Path) -> dict[str, str]:
    return dict(re.findall(r"^#\s*(expect|message):\s*(.*)$", request_file.read_text(), re.M))


@pytest.mark.parametrize("request_file", [p for p in sorted(CORPUS.glob("catalog_*.yaml"))
                                          if corpus_header(p)["expect"] == "CatalogError"], ids=lambda p: p.stem)
def test_corpus_catalogues_raise_their_message(request_file):
    """Each corpus request's catalogue, read with the request's columns, raises the header's message
    (the radius arguments are checked by the request itself, RequestError, before the reader)."""
    header = corpus_header(request_file)
    fields = yaml.safe_load(request_file.read_text())
    path = request_file.parent / fields["catalog_filename"]
    with pytest.raises(CatalogError) as raised:
        read_catalog(path, **{k: v for k, v in fields.items() if k in CATALOG_KEYS})
    assert header["message"].strip() in str(raised.value)


def test_corpus_has_a_catalogue_per_case():
    names = {p.stem for p in CORPUS.glob("catalog_*.yaml")}
    assert len(names) >= 20
    used = {yaml.safe_load(p.read_text())["catalog_filename"] for p in CORPUS.glob("catalog_*.yaml")}
    assert {f"catalogs/{p.name}" for p in (CORPUS / "catalogs").iterdir()} <= used
