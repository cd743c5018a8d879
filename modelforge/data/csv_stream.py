"""The raw side of the streaming CSV/TSV reader: bytes in, blocks of whole records out.

The stream is read in blocks of a few MB; each block is cut at the last newline outside
quotes (quote parity) and completed with ``readline``. The header is read and checked here
(BOM, encoding, column count, duplicate names). Limits keep hostile files cheap: the header
line is capped at 4 MiB / 65,536 columns and a record at 64 MiB. Parsing the blocks is
:mod:`modelforge.data.csv_reader`'s job.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import IO

from modelforge.errors import DataError, UsageError
from modelforge.text import escape, safe

BLOCK_SIZE = 16 * 1024 * 1024
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_COLUMNS = 65_536
MAX_RECORD_BYTES = 64 * 1024 * 1024
LONG_LINE = 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_JSON_START = re.compile(r'\s*(\{|\[\s*[\[{"\d.\-\]])')


def _is_utf8(name: str) -> bool:
    try:
        return codecs.lookup(name).name == "utf-8"
    except LookupError:
        raise UsageError(
            f"unknown encoding '{escape(name)}'",
            hint="use a Python codec name such as utf-8, latin-1, cp1252, utf-16",
            code="invalid_option",
        ) from None


class CsvStream:
    """Reads the header on construction; ``_blocks()`` yields blocks of whole records."""

    def __init__(
        self,
        stream: IO[bytes],
        name: str,
        *,
        fmt: str = "csv",
        delimiter: str | None = None,
        encoding: str | None = None,
        block_size: int = BLOCK_SIZE,
        regular: bool = False,
    ) -> None:
        self.stream = stream
        self.name = escape(name)
        # a regular file is read with read(n), which fills the whole request in one copy;
        # a pipe with read1(n), which returns what has arrived (rows answered as they come)
        self._read = stream.read if regular else getattr(stream, "read1", stream.read)
        self._known_lines: int | None = None  # set by batches() when it counted them
        self.delim = delimiter if delimiter is not None else ("\t" if fmt == "tsv" else ",")
        if self.delim in ("\\t", "tab"):
            self.delim = "\t"
        if len(self.delim) != 1 or self.delim in ('"', "\n", "\r"):
            raise UsageError(
                f"--delimiter must be one character, got '{escape(self.delim)}'",
                code="invalid_option",
            )
        self._d = self.delim.encode()
        self.block_size = block_size
        self._decoder = None
        self._encoding = encoding or "utf-8"
        if encoding and not _is_utf8(encoding):
            self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self._buf = b""
        self._block_quotes = 0
        self._eof = False
        self.consumed = 0  # bytes of the (transcoded) stream handed to the parser
        self.lines = 1  # physical lines before the current block (the header is line 1)
        self.columns = self._read_header()
        self._index = {c: i for i, c in enumerate(self.columns)}

    # raw input ----------------------------------------------------------------------
    def _fill(self, want: int) -> bool:
        """Append up to ``want`` bytes to the buffer; False at end of stream."""
        if self._eof:
            return False
        raw = self._read(want)
        if not raw:
            self._eof = True
            self._buf += self._transcode(b"", final=True)
            return False
        self._buf += self._transcode(raw)
        return True

    def _transcode(self, raw: bytes, final: bool = False) -> bytes:
        if self._decoder is None:
            return raw
        try:
            return self._decoder.decode(raw, final=final).encode("utf-8")
        except UnicodeError as exc:  # UTF-16 without a BOM is a plain UnicodeError
            reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise DataError(
                f"input '{self.name}' cannot be decoded as {escape(self._encoding)}: "
                f"{escape(reason)}",
                hint="check --encoding",
                code="encoding_error",
            ) from None

    def _utf8_error(self, data: bytes, base: int, line_base: int) -> None:
        if data.isascii():
            return
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = line_base + data.count(b"\n", 0, exc.start) + 1
            raise DataError(
                f"input '{self.name}' is not valid UTF-8: byte 0x{data[exc.start]:02x} at "
                f"offset {base + exc.start} (line {line})",
                hint="pass --encoding latin-1 (or the file's real encoding, e.g. cp1252)",
                code="encoding_error",
            ) from None

    def _read_header(self) -> list[str]:
        import csv

        while b"\n" not in self._buf and len(self._buf) <= MAX_HEADER_BYTES:
            if not self._fill(1024 * 1024):
                break
        if self._buf.startswith(_BOM):
            self._buf = self._buf[3:]
            self.consumed = 3
        if not self._buf.strip():
            raise DataError(
                f"input '{self.name}' is empty",
                hint="pass a CSV file with a header line and at least one row",
                code="empty_input",
            )
        end = self._buf.find(b"\n")
        self._check_cr(self._buf[: end if end >= 0 else MAX_HEADER_BYTES], end >= 0)
        if end < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                raise DataError(
                    f"input '{self.name}': the header line is longer than "
                    f"{MAX_HEADER_BYTES // (1024 * 1024)} MiB",
                    hint="this is not a CSV file with a normal header",
                    code="line_too_long",
                )
            end = len(self._buf)
        line = self._buf[:end]
        if line.count(self._d) + 1 > MAX_COLUMNS:
            raise DataError(
                f"input '{self.name}' has {line.count(self._d) + 1:,} columns in its header; "
                f"the limit is {MAX_COLUMNS:,}",
                hint="split the file, or use NPY/NPZ for very wide data",
                code="too_many_columns",
            )
        if b"\0" in line:
            raise DataError(
                f"input '{self.name}' contains NUL bytes; it is not a text CSV file",
                hint="pass a CSV/TSV text file (UTF-16 text needs --encoding utf-16), or "
                "--format for other formats",
                code="binary_input",
            )
        self._utf8_error(line, self.consumed, 0)
        text = line.decode("utf-8").rstrip("\r")
        if _JSON_START.match(text):  # a header naming columns does not start like JSON
            kind = "TSV" if self.delim == "\t" else "CSV"
            raise DataError(
                f"input '{self.name}' looks like JSON, not {kind}",
                hint="pass --format jsonl (one object per line) or --format json (one object "
                "of arrays); stdin without --format is read as CSV",
                code="looks_like_json",
            )
        try:
            names = next(csv.reader([text], delimiter=self.delim))
        except (csv.Error, StopIteration) as exc:
            raise DataError(
                f"input '{self.name}': the header line cannot be parsed ({safe(str(exc), 80)})",
                hint="the first line must name the columns, separated by the delimiter",
                code="csv_parse_error",
            ) from None
        self._buf = self._buf[end + 1 :]
        self.consumed += end + 1
        if not self._more_data():
            raise DataError(
                f"input '{self.name}' has a header but no data rows",
                hint="add rows below the header line",
                code="no_rows",
            )
        seen: dict[str, int] = {}
        out = []
        for i, raw_name in enumerate(names):
            col = raw_name.strip() or f"column_{i + 1}"
            if col in seen:
                raise DataError(
                    f"input '{self.name}' has duplicate column name '{safe(col)}' "
                    f"(columns {seen[col] + 1} and {i + 1})",
                    hint="rename one of the columns",
                    code="duplicate_column",
                )
            seen[col] = i
            out.append(col)
        return out

    def _check_cr(self, line: bytes, has_lf: bool) -> None:
        """A carriage return inside the first line (not the CR of a CRLF ending): the file
        ends its lines with CR alone (classic Mac OS, some Excel exports), or, when an LF
        follows, the header line mixes line endings."""
        cr = line.rstrip(b"\r").find(b"\r")
        if cr < 0 or b'"' in line[:cr]:
            return
        if has_lf:
            raise DataError(
                f"input '{self.name}': the header line holds a carriage return (CR) inside "
                "it (mixed line endings)",
                hint="end every line with LF or CRLF; remove the stray CR from the header",
                code="cr_line_endings",
            )
        raise DataError(
            f"input '{self.name}' ends its lines with a carriage return (CR) alone; "
            "lines must end with LF or CRLF",
            hint=f"convert the line endings to LF (mac2unix {self.name}, from dos2unix) or "
            "save the file again with Unix or Windows line endings",
            code="cr_line_endings",
        )

    def _more_data(self) -> bool:
        while not self._buf.strip():
            self.lines += self._buf.count(b"\n")
            self._buf = b""
            if not self._fill(1024 * 1024):
                return False
        return True

    # record boundaries --------------------------------------------------------------
    def _readline(self) -> bytes:
        """The rest of the current line (transcoded), or b"" at the end of the stream."""
        if self._buf:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                out, self._buf = self._buf[: nl + 1], self._buf[nl + 1 :]
                return out
            out, self._buf = self._buf, b""
            return out + self._readline()
        if self._eof:
            return b""
        raw = self.stream.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            self._eof = True
            return self._transcode(b"", final=True)
        return self._transcode(raw)

    def _chunk(self) -> bytes:
        """About ``block_size`` bytes; from a pipe, whatever is there once it runs dry."""
        while len(self._buf) < self.block_size:
            if b"\n" in self._buf and not self._ready():
                break  # a pipe with nothing more for now: parse what has arrived
            if not self._fill(self.block_size - len(self._buf)):
                break
        if len(self._buf) > self.block_size:
            out, self._buf = self._buf[: self.block_size], self._buf[self.block_size :]
        else:
            out, self._buf = self._buf, b""
        return out

    def _ready(self) -> bool:
        """More bytes can be read from the stream without waiting."""
        import select

        try:
            fd = self.stream.fileno()
            return bool(select.select([fd], [], [], 0)[0])
        except (AttributeError, OSError, ValueError):
            return True

    def _blocks(self) -> Iterator[bytes]:
        """Blocks of whole records: a chunk of about ``block_size`` bytes, completed with
        ``readline`` up to a newline outside quotes (one copy per block, none when the
        chunk already ends there). The next chunk is read before a block is handed out,
        so blank lines at the very end of the file can be dropped."""
        chunk = self._chunk()
        while chunk:
            parts = [chunk]
            size = len(chunk)
            quotes = chunk.count(b'"') if b'"' in chunk else 0
            while not (parts[-1].endswith(b"\n") and quotes % 2 == 0):
                line = self._readline()
                if not line:
                    break
                if len(line) > MAX_RECORD_BYTES or size > self.block_size + MAX_RECORD_BYTES:
                    raise DataError(
                        f"input '{self.name}' has a record longer than "
                        f"{MAX_RECORD_BYTES // (1024 * 1024)} MiB after byte offset "
                        f"{self.consumed} (an unbalanced quote?)",
                        hint="check the quoting of the file",
                        code="line_too_long",
                    )
                quotes += line.count(b'"')
                parts.append(line)
                size += len(line)
            block = parts[0] if len(parts) == 1 else b"".join(parts)
            # look ahead (to spot the last block) unless that means waiting on an idle pipe
            ahead = self._eof or bool(self._buf) or self._ready()
            chunk = self._chunk() if ahead else b""
            if ahead and not chunk:  # the last block
                if quotes % 2:
                    raise DataError(
                        f"input '{self.name}' has an unbalanced double quote: a quoted field "
                        f"opened after byte offset {self.consumed} never closes",
                        hint='fix the quoting (a quote inside a field is written as "")',
                        code="unbalanced_quote",
                    )
                block = _drop_trailing_blank_lines(block)
            self._known_lines = None
            if not block.isspace():
                self._block_quotes = quotes
                yield block
            self.consumed += len(block)
            known, self._known_lines = self._known_lines, None
            self.lines += known if known is not None else block.count(b"\n")
            if not ahead:
                chunk = self._chunk()


def _drop_trailing_blank_lines(buf: bytes) -> bytes:
    """Blank lines at the very end of a file are not rows (only the tail is looked at)."""
    base = max(0, len(buf) - 65536)
    tail = buf[base:]
    nl = tail.find(b"\n", len(tail.rstrip(b" \t\r\n")))
    return buf if nl < 0 or nl + 1 == len(tail) else buf[: base + nl + 1]
