"""WebSocket frames (RFC 6455 section 5.2) after an HTTP/1 Upgrade handshake.

The handshake itself is an HTTP/1 exchange (request with `Upgrade: websocket`, 101 response): http1
finds it and says at which offsets the frames begin. Frames are walked by their header lengths, the
payload skipped (it may be masked, compressed, or beyond the snaplen); only a close frame's status code
is read, when captured. If a frame header falls in a gap the walk resyncs at the next syscall that
starts like a frame of that direction (client frames are always masked, server frames never).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.streams import Stream

OPCODES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
CLIENT_TO_SERVER = "client->server"
SERVER_TO_CLIENT = "server->client"
_RESYNC_ROWS = 4096


@dataclass(slots=True)
class Frame:
    direction: str  # CLIENT_TO_SERVER or SERVER_TO_CLIENT
    opcode: int
    length: int  # payload bytes
    masked: bool
    fin: bool
    ts: int  # when the frame's first byte was in hand at the end that was read
    offset: int  # stream offset of the frame header
    complete: bool = True  # False: the capture ended inside the frame
    close_code: int | None = None

    @property
    def opcode_name(self) -> str:
        return OPCODES.get(self.opcode, f"reserved-{self.opcode}")

    def to_dict(self) -> dict:
        return {**asdict(self), "opcode_name": self.opcode_name}


@dataclass(slots=True)
class WebSocketSession:
    """An upgraded connection: the handshake exchange and every frame seen, in time order."""

    handshake: Exchange
    frames: list[Frame] = field(default_factory=list)
    complete: bool = True
    note: str = ""

    def counts(self) -> dict[str, int]:
        """Frames per "direction opcode", e.g. {"client->server text": 3}."""
        out: dict[str, int] = {}
        for f in self.frames:
            k = f"{f.direction} {f.opcode_name}"
            out[k] = out.get(k, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"handshake": self.handshake.to_dict(), "complete": self.complete, "note": self.note,
                "counts": self.counts(), "frames": [f.to_dict() for f in self.frames]}


def _header(stream: Stream, pos: int) -> tuple[int, int, bool, bool, int, int, bytes | None] | None:
    """(opcode, rsv bits, fin, masked, payload length, header length, mask key) at pos, or None if
    the header bytes were not captured."""
    b = stream.read(pos, 2)
    if b is None:
        return None
    b0, b1 = b[0], b[1]
    n = b1 & 0x7F
    hlen = 2
    if n == 126:
        ext = stream.read(pos + 2, 2)
        if ext is None:
            return None
        n, hlen = int.from_bytes(ext, "big"), 4
    elif n == 127:
        ext = stream.read(pos + 2, 8)
        if ext is None:
            return None
        n, hlen = int.from_bytes(ext, "big"), 10
    key = None
    if b1 & 0x80:
        key = stream.read(pos + hlen, 4)
        if key is None:
            return None
        hlen += 4
    return b0 & 0x0F, b0 & 0x70, bool(b0 & 0x80), bool(b1 & 0x80), n, hlen, key


def _plausible(h: tuple | None, masked: bool) -> bool:
    # RSV1 is legal (permessage-deflate); RSV2/RSV3 are not used by any registered extension.
    return h is not None and h[0] in OPCODES and not (h[1] & 0x30) and h[3] == masked


def parse_frames(stream: Stream, pos: int, direction: str) -> tuple[list[Frame], str]:
    """Frames of one direction from offset pos to the end of the stream, and a note if any were lost."""
    masked = direction == CLIENT_TO_SERVER
    frames: list[Frame] = []
    note = ""
    while pos < stream.length:
        h = _header(stream, pos)
        if not _plausible(h, masked):
            note = "some frames not captured"
            nxt = None
            for n, p in enumerate(stream.row_starts(pos + 1)):
                if n >= _RESYNC_ROWS:
                    break
                if _plausible(_header(stream, p), masked):
                    nxt = p
                    break
            if nxt is None:
                break
            pos = nxt
            continue
        assert h is not None
        opcode, _, fin, is_masked, n, hlen, key = h
        f = Frame(direction, opcode, n, is_masked, fin, stream.seen_ts(pos), pos)
        end = pos + hlen + n
        if end > stream.length:
            f.complete = False
            note = note or "truncated at capture end"
        if opcode == 8 and n >= 2:
            code = stream.read(pos + hlen, 2)
            if code is not None:
                if key:
                    code = bytes((code[0] ^ key[0], code[1] ^ key[1]))
                f.close_code = int.from_bytes(code, "big")
        frames.append(f)
        pos = end
    return frames, note


def parse_session(handshake: Exchange, c2s: Stream, c2s_pos: int, s2c: Stream,
                  s2c_pos: int) -> WebSocketSession:
    """Both directions of an upgraded connection, from where the handshake ended. Never raises."""
    session = WebSocketSession(handshake)
    try:
        up, note_up = parse_frames(c2s, c2s_pos, CLIENT_TO_SERVER)
        down, note_down = parse_frames(s2c, s2c_pos, SERVER_TO_CLIENT)
    except Exception as e:  # a parser bug must not lose the rest of the capture
        session.complete, session.note = False, f"unparsed: {type(e).__name__}"
        return session
    session.frames = sorted(up + down, key=lambda f: f.ts)
    note = note_up or note_down
    if note:
        session.complete, session.note = False, note
    return session
