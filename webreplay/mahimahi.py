"""Load a Mahimahi recording folder (``corpus/mahimahi/<folder>/``) as a replayable ``Site``.

Format: the current record layout (Mahimahi since July 2014, ``protobufs/http_record.proto``;
``corpus/README`` section 4a): one ``RequestResponse`` message per file, decoded with a message
class built at run time from a ``FileDescriptorProto`` (no protoc needed). Files of the legacy
2014 layout (first byte 0x08, ravinet/sites) are rejected with a clear error; they need a
conversion step first.

Reading rules (the keep/exclude rules shared with HAR are in ``pagebuild.py``; all of them are
written out in ``corpus/RULES.md``):

* Files are read in file-name order (the names are random, the order is only deterministic).
* The URL is scheme (field 3) + ``Host`` request header + request target; the port is the
  recorded server port (field 2).
* Bodies are as on the wire: ``Transfer-Encoding: chunked`` bodies are de-chunked (framing
  checked, bounded by ``httpframing.MAX_BODY``); a ``Content-Length`` must equal the body length;
  framing and hop-by-hop headers are dropped. Content-Encoded bodies stay compressed, with their
  ``Content-Encoding`` header.
* The main document is the first file (in name order) for the site's main URL (from
  ``corpus/sites.toml``); a later recording of the same URL is left out as a duplicate (bing
  records its root twice, 67,948 and 67,941 bytes chunked, 67,865 de-chunked: the first file in name
  order is kept). A 3xx
  whose Location is the main URL is left out as "redirect before the main document".
* Requests with ``X-Requested-With`` are left out as "fetched by a script"; requests with neither
  ``Referer`` nor ``Accept`` are the browser's own background traffic (Chrome's variations seed,
  translate, safebrowsing model, extension update, OAuth userinfo) and are left out too.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from webreplay.adblock import BlockList, default_blocklist
from webreplay.errors import CorpusError
from webreplay.httpframing import dechunk, header, is_chunked, media_type, strip_framing
from webreplay.model import ExcludedObject, Site
from webreplay.pagebuild import (
    REASON_BACKGROUND,
    REASON_REDIRECT_TO_MAIN,
    REASON_SCRIPT,
    RecordedObject,
    build_site,
    normalize_url,
)
from webreplay.siteindex import entry_for_path

CURRENT_LAYOUT_FIRST_BYTE = 0x0A  # field 1 (ip), length-delimited
LEGACY_LAYOUT_FIRST_BYTE = 0x08  # field 1 (port), varint: the pre-July-2014 "reqrespair"
MAX_RECORD_BYTES = 64 * 1024 * 1024
_SCHEMES = {1: "http", 2: "https"}


@functools.cache
def record_class() -> type[Any]:
    """The ``MahimahiProtobufs.RequestResponse`` message class of http_record.proto (syntax 2).

    Typed ``Any``: the fields of a class built at run time are unknown to the type checker.
    """
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="http_record.proto", package="MahimahiProtobufs", syntax="proto2")
    hdr = proto.message_type.add(name="HTTPHeader")
    hdr.field.add(name="key", number=1, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
    hdr.field.add(name="value", number=2, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
    msg = proto.message_type.add(name="HTTPMessage")
    msg.field.add(name="first_line", number=1, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
    msg.field.add(
        name="header",
        number=2,
        type=field.TYPE_MESSAGE,
        type_name=".MahimahiProtobufs.HTTPHeader",
        label=field.LABEL_REPEATED,
    )
    msg.field.add(name="body", number=3, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
    pair = proto.message_type.add(name="RequestResponse")
    scheme = pair.enum_type.add(name="Scheme")
    scheme.value.add(name="HTTP", number=1)
    scheme.value.add(name="HTTPS", number=2)
    pair.field.add(name="ip", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    pair.field.add(name="port", number=2, type=field.TYPE_UINT32, label=field.LABEL_OPTIONAL)
    pair.field.add(
        name="scheme",
        number=3,
        type=field.TYPE_ENUM,
        type_name=".MahimahiProtobufs.RequestResponse.Scheme",
        label=field.LABEL_OPTIONAL,
    )
    for name, number in (("request", 4), ("response", 5)):
        pair.field.add(
            name=name,
            number=number,
            type=field.TYPE_MESSAGE,
            type_name=".MahimahiProtobufs.HTTPMessage",
            label=field.LABEL_OPTIONAL,
        )
    # A private pool: the process-wide default pool may already hold another http_record.proto.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("MahimahiProtobufs.RequestResponse"))


def _headers(msg: Any) -> tuple[tuple[str, str], ...]:
    # Header bytes are ISO-8859-1 on the HTTP/1.1 wire (RFC 9110 5.5): every byte maps to one char.
    return tuple((h.key.decode("latin-1").strip(), h.value.decode("latin-1").strip()) for h in msg.header)


def parse_record(data: bytes, source: str) -> Any:
    """Decode one record file's bytes (current layout) into a ``RequestResponse`` message."""
    if not data:
        raise CorpusError(f"{source}: empty file, not a Mahimahi record")
    if len(data) > MAX_RECORD_BYTES:
        raise CorpusError(f"{source}: {len(data)} bytes, more than the limit of {MAX_RECORD_BYTES}")
    if data[0] == LEGACY_LAYOUT_FIRST_BYTE:
        raise CorpusError(
            f"{source}: legacy Mahimahi record layout (first byte 0x08, before July 2014, e.g. ravinet/sites): "
            "convert it to the current http_record.proto layout first"
        )
    if data[0] != CURRENT_LAYOUT_FIRST_BYTE:
        raise CorpusError(f"{source}: first byte 0x{data[0]:02x}: not a Mahimahi record (expected 0x0a)")
    record = record_class()()
    try:
        record.ParseFromString(data)
    except message.DecodeError as err:
        raise CorpusError(f"{source}: corrupt or truncated protobuf record: {err}") from err
    if not record.HasField("request") or not record.HasField("response"):
        raise CorpusError(f"{source}: record without a request or a response")
    return record


def _object(record: Any, source: str) -> RecordedObject:
    """The neutral object of one record."""
    scheme = _SCHEMES.get(record.scheme)
    if scheme is None:
        raise CorpusError(f"{source}: scheme={record.scheme}: expected 1 (HTTP) or 2 (HTTPS)")
    request_line = record.request.first_line.decode("latin-1").split(" ")
    if len(request_line) != 3 or not request_line[1].startswith("/"):
        raise CorpusError(f"{source}: bad request line {record.request.first_line[:80]!r}")
    method, target, _ = request_line
    request_headers = _headers(record.request)
    host_header = header(request_headers, "host")
    if not host_header:
        raise CorpusError(f"{source}: request without a Host header")
    host = host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header
    default = 443 if scheme == "https" else 80
    port = record.port or default
    url = f"{scheme}://{host.lower()}{'' if port == default else f':{port}'}{target}"

    status_line = record.response.first_line.decode("latin-1").split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise CorpusError(f"{source}: bad status line {record.response.first_line[:80]!r}")
    status = int(status_line[1])
    recorded = _headers(record.response)
    body = record.response.body
    if is_chunked(recorded):
        body = dechunk(body, source)
    else:
        length = header(recorded, "content-length")
        if length is not None and length.isdigit() and int(length) != len(body) and method != "HEAD":
            raise CorpusError(f"{source}: Content-Length {length} but the recorded body has {len(body)} bytes")
    script = None
    if header(request_headers, "x-requested-with") is not None:
        script = REASON_SCRIPT
    elif header(request_headers, "referer") is None and header(request_headers, "accept") is None:
        script = REASON_BACKGROUND
    return RecordedObject(
        url=url,
        method=method.upper(),
        status=status,
        reason=status_line[2] if len(status_line) == 3 else "",
        headers=strip_framing(recorded),
        body=body,
        size=len(body),
        content_type=media_type(header(recorded, "content-type")),
        script_reason=script,
    )


def load_records(folder: Path) -> list[RecordedObject]:
    """Every record of ``folder`` as a neutral object, in file-name order."""
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a Mahimahi recording folder")
    objects = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CorpusError(f"{path}: cannot read: {err}") from err
        objects.append(_object(parse_record(data, str(path)), str(path)))
    if not objects:
        raise CorpusError(f"{folder}: no record files")
    return objects


def _redirect_target(obj: RecordedObject) -> str | None:
    location = header(obj.headers, "location")
    if not location:
        return None
    try:
        return normalize_url(urljoin(obj.url, location), obj.url)
    except CorpusError:
        return None  # a Location to a non-http(s) URL cannot lead to the main document


def load_mahimahi_site(
    folder: Path,
    name: str,
    main_url: str | None = None,
    *,
    blocklist: BlockList | None = None,
    source: str | None = None,
) -> Site:
    """Load the recording ``folder`` as site ``name`` starting at ``main_url`` (rules in the module docstring).

    Without ``main_url``, the folder's entry in ``corpus/sites.toml`` gives it.
    """
    label = source if source is not None else str(folder)
    if main_url is None:
        main_url = entry_for_path("mahimahi", folder).main_url
    objects = load_records(folder)
    main_norm = normalize_url(main_url, label)
    main_index = next((i for i, o in enumerate(objects) if normalize_url(o.url, label) == main_norm), None)
    if main_index is None:
        raise CorpusError(f"{folder}: no record of the main URL {main_url}")
    main = objects[main_index]
    excluded: list[ExcludedObject] = []
    rest: list[RecordedObject] = []
    for i, obj in enumerate(objects):
        if i == main_index:
            continue
        if 300 <= obj.status <= 399 and _redirect_target(obj) == main_norm:
            excluded.append(ExcludedObject(url=obj.url, reason=REASON_REDIRECT_TO_MAIN))
        else:
            rest.append(obj)
    return build_site(
        name=name,
        corpus="mahimahi",
        source=label,
        main_url=main.url,
        main=main,
        objects=rest,
        excluded=excluded,
        blocklist=blocklist if blocklist is not None else default_blocklist(),
    )
