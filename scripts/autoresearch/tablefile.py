"""A person's data file as a table: its format by content, its encoding, separator and decimal mark, its dates.

`sniff(path)` decides how to read the file and `read(path, source, missing)` reads it with exactly the call the
generated prepare.py repeats (taskfiles.py spells it out there), so the frozen harness reads the same bytes the
same way. The file's name never decides: an Excel workbook or a Parquet file saved as `.csv` is recognised by
its first bytes. CSV and Excel .xlsx are read; other formats are refused with one line saying how to convert.
`find_dates(frame)` finds text columns of dates and the one format each is written in.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from autoresearch.runs import RunError

SNIFF_BYTES = 1 << 16  # the head read to find the separator: hundreds of rows of a typical table
SNIFF_ROWS = 200  # records compared for a consistent field count
CONSISTENT_SHARE = 0.9  # a separator must split this share of the sampled records into the header's field count
SEPARATORS = {",": "comma", ";": "';'", "\t": "tab", "|": "'|'"}  # tried in this order; the first wins a tie
ENCODING_CHUNK = 1 << 20  # bytes decoded at a time to check that the whole file is valid in an encoding
BOMS = {codecs.BOM_UTF8: "utf-8-sig", codecs.BOM_UTF16_LE: "utf-16", codecs.BOM_UTF16_BE: "utf-16"}
ENCODING_NAMES = {
    "utf-8-sig": "UTF-8 with a byte-order mark",
    "utf-16": "UTF-16 text (as Excel's 'Unicode text')",
    "cp1252": "Windows-1252 (Latin-1) text",
    "latin-1": "Latin-1 text",
}
DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")  # 3,14: a number in a European file
DECIMAL_POINT = re.compile(r"^[-+]?\d*\.\d+$")  # 3.14: decimals with a point rule a decimal comma out
# Magic bytes of formats that are not text tables; xlsx is a zip checked for its workbook part.
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # the old binary Office formats: .xls (and .doc)
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
SINGLE_QUOTED = re.compile(r"^'[^']*'$")  # 'vote': a header written by a tool that quotes with apostrophes
XLSX_PART = "xl/workbook.xml"  # present in every .xlsx/.xlsm, absent from other zips

# A date as people write them: 2020-01-31, 31/01/2020, 1.31.20, 31 Jan 2020, January 31, 2020, 2020-01, with an
# optional time. A year alone, a small integer or a range such as 10-19 does not match: those are not dates.
DATE_PATTERN = re.compile(
    r"""^(\d{4}[-/.]\d{1,2}([-/.]\d{1,2})?
        |\d{1,2}[-/.]\d{1,2}[-/.]\d{2}(\d{2})?
        |\d{1,2}[-\s]?[A-Za-z]{3,9}\.?[-\s,]*\d{2}(\d{2})?
        |[A-Za-z]{3,9}\.?\s\d{1,2},?\s\d{4})
      ([\sT]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*([AaPp][Mm])?(Z|[+-]\d{2}:?\d{2})?)?$""",
    re.VERBOSE,
)
DATE_SHARE = 0.9  # a text column is read as dates when this share of its values match and parse in one format
DATE_GUESSES = 5  # values whose guessed format is tried (a later 13/01 settles an early 01/02)
TWO_DIGIT_YEAR_FORMATS = ("%m/%d/%y", "%d/%m/%y", "%d.%m.%y", "%d-%m-%y")  # pandas guesses no 2-digit year


@dataclass
class Source:
    """How a data file is read: `kind` picks the pandas reader, `options` are its keyword arguments."""

    kind: str  # "csv" (pd.read_csv) or "excel" (pd.read_excel)
    options: dict[str, str] = field(default_factory=dict)
    note: str = ""  # how it was read, for a person, when it is not plain comma-separated UTF-8 ("" when it is)


def _refuse(path: Path, what: str, how: str) -> RunError:
    return RunError(f"{path.name} is {what}, not a CSV: {how}")


def sniff_format(path: Path) -> str:
    """ "csv" or "excel" from the file's first bytes; any other format is a one-line RunError saying what to do."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(PARQUET_MAGIC):
        raise _refuse(
            path,
            "a Parquet file",
            "write it as CSV where pyarrow is installed, e.g. pandas.read_parquet(FILE).to_csv('data.csv', "
            "index=False), and pass that",
        )
    if head.startswith(OLE_MAGIC):
        raise _refuse(
            path, "an old Excel workbook (.xls)", "open it and save it as .xlsx or CSV (File > Save As), then pass that"
        )
    if head.startswith(GZIP_MAGIC):
        raise _refuse(path, "gzip-compressed", "decompress it (gunzip) and pass the CSV inside")
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile as exc:
            raise _refuse(path, "a damaged zip archive", "pass the table as a CSV or .xlsx file") from exc
        if XLSX_PART in names:
            return "excel"
        raise _refuse(path, "a zip archive", "unzip it and pass the CSV inside (or save a spreadsheet as CSV)")
    return "csv"


def _decodes(path: Path, encoding: str) -> bool:
    """Whether the whole file is valid in `encoding` (chunked: the file is not held in memory twice)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(ENCODING_CHUNK):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def sniff_encoding(path: Path, head: bytes) -> str:
    """A byte-order mark decides; else UTF-8 if the whole file is valid UTF-8, else Windows-1252, else Latin-1
    (which decodes any bytes: a file in another 8-bit code page reads with some letters wrong, never fails)."""
    for bom, encoding in BOMS.items():
        if head.startswith(bom):
            return encoding
    if b"\x00" in head:
        raise _refuse(path, "binary (it has NUL bytes)", "export the table as a CSV text file and pass that")
    for encoding in ("utf-8", "cp1252"):
        if _decodes(path, encoding):
            return encoding
    return "latin-1"


def _records(sample: str, separator: str, truncated: bool) -> list[list[str]]:
    rows = [r for r in csv.reader(io.StringIO(sample), delimiter=separator) if any(f.strip() for f in r)]
    return rows[:-1] if truncated and len(rows) > 1 else rows  # a record cut by the sample's end is not counted


def sniff_separator(sample: str, truncated: bool = False) -> str:
    """The separator that splits the header into the most fields and nearly every record into as many."""
    best, best_width = ",", 1
    for separator in SEPARATORS:
        rows = _records(sample, separator, truncated)[:SNIFF_ROWS]
        if not rows:
            continue
        width = len(rows[0])
        same = sum(len(r) == width for r in rows) / len(rows)
        if width > best_width and same >= CONSISTENT_SHARE:
            best, best_width = separator, width
    return best


def sniff_decimal(sample: str, separator: str, truncated: bool = False) -> str:
    """ "," when a file separated by something other than commas writes numbers as 3,14 and never as 3.14."""
    if separator == ",":
        return "."
    fields = [f.strip() for r in _records(sample, separator, truncated)[1:SNIFF_ROWS] for f in r]
    commas = any(DECIMAL_COMMA.match(f) for f in fields)
    points = any(DECIMAL_POINT.match(f) for f in fields)
    return "," if commas and not points else "."


def sniff(path: Path) -> Source:
    """How to read `path`: its format, and for a CSV its encoding, separator and decimal mark."""
    if sniff_format(path) == "excel":
        return excel_source(path)
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        truncated = bool(fh.read(1))
    encoding = sniff_encoding(path, head)
    sample = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=not truncated)
    sample = sample.lstrip("\ufeff")
    separator = sniff_separator(sample, truncated)
    decimal = sniff_decimal(sample, separator, truncated)
    options = {"sep": separator, "decimal": decimal, "encoding": encoding}
    notes = []
    if separator != ",":
        notes.append(f"{SEPARATORS[separator]}-separated")
    if decimal != ".":
        notes.append("decimal comma")
    if encoding != "utf-8":
        notes.append(ENCODING_NAMES[encoding])
    header = next(iter(_records(sample, separator, truncated)), [])
    if len(header) > 1 and all(SINGLE_QUOTED.match(f.strip()) for f in header):
        # Every name in 'quotes': read ' as the quote character, or the target would be "'vote'", not vote.
        options["quotechar"] = "'"
        notes.append("names quoted with '")
    return Source("csv", options, ", ".join(notes))


def excel_source(path: Path) -> Source:
    """The workbook's first sheet; the note names it and says whether others are left unread."""
    try:
        with pd.ExcelFile(path, engine="openpyxl") as book:
            sheets = book.sheet_names
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds on a broken workbook; one line for each
        why = " ".join(str(exc).split())[:200]
        raise RunError(f"{path.name} looks like an Excel workbook but cannot be read ({why})") from exc
    others = f", the first of {len(sheets)}; the others are not read" if len(sheets) > 1 else ""
    return Source("excel", {"sheet_name": sheets[0]}, f"an Excel workbook (sheet {sheets[0]!r}{others})")


def read(path: Path, source: Source, missing_values: list[str]) -> pd.DataFrame:
    """The table, read with the call the generated prepare.py makes (keep the two the same)."""
    if source.kind == "excel":
        frame = pd.read_excel(path, na_values=missing_values, **source.options)
    else:
        frame = pd.read_csv(path, na_values=missing_values, low_memory=False, **source.options)
    frame.columns = [str(c) for c in frame.columns]  # a workbook's header may hold numbers; columns are named
    return frame


def _guess_format(value: str) -> set[str]:
    try:
        from pandas.tseries.api import guess_datetime_format
    except ImportError:  # pandas < 2.2 keeps it private
        from pandas._libs.tslibs.parsing import guess_datetime_format
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns that dayfirst disagrees with the format it found: asked on purpose
        return {f for f in (guess_datetime_format(value), guess_datetime_format(value, dayfirst=True)) if f}


def parse_dates(values: pd.Series, date_format: str) -> pd.Series:
    """The column as datetimes in `date_format`; a value that does not fit becomes missing (as prepare.py does)."""
    return pd.to_datetime(values, format=date_format, errors="coerce")


@dataclass
class DateColumn:
    """How a column of dates is read, and what a person should know about it."""

    format: str | None  # the strptime format its text is parsed with; None for cells a workbook already holds as dates
    unparsed: int = 0  # values that do not fit the format and are read as missing
    ambiguous: str = ""  # another format that reads every value too (day and month both 12 or less)


def date_column(values: pd.Series) -> DateColumn | None:
    """A DateColumn when the text column holds dates in one format (most values), else None."""
    present = values.dropna().astype(str).str.strip()
    if present.empty or present.str.match(DATE_PATTERN).mean() < DATE_SHARE:
        return None
    candidates = set()
    for value in present.drop_duplicates().head(DATE_GUESSES):
        candidates |= _guess_format(value)
    if present.str.match(r"^\d{1,2}[-/.]\d{1,2}[-/.]\d{2}$").any():
        candidates |= set(TWO_DIGIT_YEAR_FORMATS)
    parsed = {f: int(parse_dates(present, f).notna().sum()) for f in sorted(candidates)}
    if not parsed:
        return None
    best = max(parsed, key=lambda f: (parsed[f], "%m" in f.split("%d")[0]))  # a tie: month first, as pandas does
    if parsed[best] < DATE_SHARE * len(present):
        return None
    rivals = [f for f in parsed if f != best and parsed[f] == parsed[best]]
    return DateColumn(best, unparsed=len(present) - parsed[best], ambiguous=rivals[0] if rivals else "")


def find_dates(frame: pd.DataFrame, columns: list[str]) -> dict[str, DateColumn]:
    """Which of `columns` hold dates: text in a date format, or cells a workbook already gives as datetimes.
    Numbers are never dates (20200131 or a year is left a number)."""
    found = {}
    for column in columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            found[column] = DateColumn(None)
        elif pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values):
            date = date_column(values)
            if date:
                found[column] = date
    return found
