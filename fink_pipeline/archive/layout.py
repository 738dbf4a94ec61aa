"""Archive layout: `<root>/<survey>/science/year=YYYY/month=MM/day=DD/part-NNNNN.parquet`.

The layout of Fink's nightly merge job (`partitionBy("year", "month", "day")` with zero-padded
string values, reference section 2). The partition values live only in the directory names,
never inside the files. Readers also accept unpadded values (`month=1`), as found upstream.

Paths are plain strings handled through `pyarrow.fs`, so a root may be a local path, a
`file://` URI or (later) any URI `pyarrow.fs.FileSystem.from_uri` understands, e.g. `s3://`.
Functions returning paths keep the root's form (URI stays URI) so that Spark and
pyarrow.dataset can read them directly.
"""

from __future__ import annotations

import datetime as dt
import os
import re

import pyarrow.fs as pafs

SCIENCE = "science"
_PARTITION = re.compile(r"^(year|month|day)=(\d{1,4})$")


def science_root(root: str, survey: str) -> str:
    """`<root>/<survey>/science`: the hive base path of a survey's archive."""
    return f"{_strip(root)}/{survey}/{SCIENCE}"


def night_dir(root: str, survey_name: str, night: dt.date) -> str:
    """`<root>/<survey>/science/year=YYYY/month=MM/day=DD` (zero-padded, like Fink's merge job)."""
    return f"{science_root(root, survey_name)}/{night_partition(night)}"


def night_partition(night: dt.date) -> str:
    """`year=YYYY/month=MM/day=DD`: the relative directory of one night."""
    return f"year={night.year:04d}/month={night.month:02d}/day={night.day:02d}"


def parse_night(value: str | dt.date) -> dt.date:
    """A night from `YYYY-MM-DD` or `YYYYMMDD` (a `date` is returned as is).

    Raises ValueError naming the bad value and the accepted formats.
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"invalid night {value!r}: expected YYYY-MM-DD or YYYYMMDD (e.g. 2024-03-01 or 20240301)")


def resolve(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for an archive root given as a path or a URI."""
    text = str(root)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/") or "/"
    return pafs.LocalFileSystem(), os.path.abspath(text)


def list_nights(root: str, survey: str) -> list[dt.date]:
    """Sorted nights present in the archive: `year=/month=/day=` folders holding a Parquet file.

    Hidden or temporary entries (names starting with `.` or `_`) are ignored, as Spark and
    pyarrow.dataset ignore them, so a night being written is never listed. A missing root
    gives an empty list.
    """
    fs, base = resolve(root)
    science = f"{base.rstrip('/')}/{survey}/{SCIENCE}"
    nights: set[dt.date] = set()
    for year_info, year in _partitions(fs, science, "year"):
        for month_info, month in _partitions(fs, year_info.path, "month"):
            for day_info, day in _partitions(fs, month_info.path, "day"):
                try:
                    night = dt.date(year, month, day)
                except ValueError:
                    continue  # e.g. month=13: not a night
                if _has_parquet(fs, day_info.path):
                    nights.add(night)
    return sorted(nights)


def _strip(root: str) -> str:
    text = str(root)
    return text if text.endswith("://") else text.rstrip("/")


def _partitions(fs: pafs.FileSystem, path: str, key: str):
    """(FileInfo, int value) of the `key=value` sub-directories of `path`."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for info in infos:
        if info.type != pafs.FileType.Directory:
            continue
        match = _PARTITION.match(info.base_name)
        if match and match.group(1) == key:
            out.append((info, int(match.group(2))))
    return out


def _has_parquet(fs: pafs.FileSystem, path: str) -> bool:
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(
        info.type == pafs.FileType.File
        and info.base_name.endswith(".parquet")
        and not info.base_name.startswith((".", "_"))
        for info in infos
    )
